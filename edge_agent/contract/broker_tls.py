"""Credentials and TLS for any paho client of the fleet's broker, from plain values.

Both sides connect the same way (the agent's publisher through
``edge_agent.delivery.mqtt_security``, the hub's ingest directly), so neither can forget
a part of it: the broker's certificate is always verified, including its host name.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt


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
    """Apply username/password and TLS (CA, optional client certificate) to ``client``."""
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
