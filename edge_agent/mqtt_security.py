"""Broker credentials and TLS for a paho client, from the agent's ``[mqtt]`` section.

One place that knows how a client authenticates, so the agent's publisher (and anything
else that opens a connection) and the hub's ingest cannot forget a part of it. See
docs/security.md for the broker side: per-device users, the ACL, the TLS listener.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt

from edge_agent.config import MqttConfig


def configure_client(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Apply username/password and TLS (CA, optional client certificate) to ``client``.

    Call before connecting. With TLS the broker's certificate is always verified (against
    ``tls_ca``, or the system CAs when only ``tls = true``) including its host name;
    there is deliberately no switch to turn verification off.
    """
    apply_credentials(
        client,
        username=cfg.username,
        password=cfg.resolved_password(),
        tls=cfg.uses_tls,
        ca=cfg.tls_ca,
        cert=cfg.tls_cert,
        key=cfg.tls_key,
    )


def apply_credentials(
    client: mqtt.Client,
    *,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> None:
    """The same as ``configure_client`` from plain values (the hub's settings use it)."""
    if username:
        client.username_pw_set(username, password)
    if tls or ca is not None or cert is not None:
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        client.tls_set(
            ca_certs=None if ca is None else str(ca),
            certfile=None if cert is None else str(cert),
            keyfile=None if key is None else str(key),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
