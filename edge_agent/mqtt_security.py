"""Broker credentials and TLS for a paho client, from the agent's ``[mqtt]`` section.

One place that knows how the agent authenticates, so the publisher (and anything else
that opens a connection: status, config) cannot forget a part of it. See
docs/security.md for the broker side: per-device users, the ACL, the TLS listener.
"""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt

from edge_agent.config import MqttConfig


def configure_client(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Apply username/password and TLS (CA, optional client certificate) to ``client``.

    Call before connecting. With TLS the broker's certificate is always verified (against
    ``tls_ca``, or the system CAs when only ``tls = true``) including its host name;
    there is deliberately no switch to turn verification off.
    """
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password)
    if cfg.uses_tls:
        client.tls_set(
            ca_certs=None if cfg.tls_ca is None else str(cfg.tls_ca),
            certfile=None if cfg.tls_cert is None else str(cfg.tls_cert),
            keyfile=None if cfg.tls_key is None else str(cfg.tls_key),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
