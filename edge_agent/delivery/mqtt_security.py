"""Broker credentials and TLS for a paho client, from the agent's ``[mqtt]`` section.

One place that knows how a client authenticates, so the agent's publisher (and anything
else that opens a connection) and the hub's ingest cannot forget a part of it. See
docs/security.md for the broker side: per-device users, the ACL, the TLS listener.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt

from edge_agent.config import MqttConfig
from edge_agent.contract.broker_tls import BrokerCredentials, apply_credentials


def configure_client(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Apply username/password and TLS (CA, optional client certificate) to ``client``.

    Call before connecting. With TLS the broker's certificate is always verified (against
    ``tls_ca``, or the system CAs when only ``tls = true``) including its host name;
    there is deliberately no switch to turn verification off.
    """
    credentials = BrokerCredentials(
        cfg.username, cfg.resolved_password(), cfg.uses_tls, cfg.tls_ca, cfg.tls_cert, cfg.tls_key
    )
    apply_credentials(client, credentials)
