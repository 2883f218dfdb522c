"""Credentials and TLS for any paho client of the fleet's broker, from plain values.

Both sides connect the same way (the agent's publisher through
``edge_agent.delivery.mqtt_security``, the hub's ingest directly), so neither can forget
a part of it: the broker's certificate is always verified, including its host name.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt


@dataclass(frozen=True, slots=True)
class BrokerCredentials:
    """How a client proves who it is to the broker, and whether it talks TLS.

    Built by each side from its own settings (the agent's ``[mqtt]`` section, the hub's
    ``HUB_MQTT_*``) and applied by :func:`apply_credentials`, the one place that knows
    how: with TLS (``tls``, or a CA or client certificate given) the broker's
    certificate is always verified, including its host name.
    """

    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def apply_credentials(client: mqtt.Client, credentials: BrokerCredentials) -> None:
    """Apply username/password and TLS (CA, optional client certificate) to ``client``."""
    username, ca, cert, key = (
        credentials.username,
        credentials.ca,
        credentials.cert,
        credentials.key,
    )
    if username:
        client.username_pw_set(username, credentials.password)
    if credentials.tls or ca is not None or cert is not None:
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        client.tls_set(
            ca_certs=None if ca is None else str(ca),
            certfile=None if cert is None else str(cert),
            keyfile=None if key is None else str(key),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
