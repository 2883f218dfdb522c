"""The hub ingests over the TLS listener with its own client certificate (CN ``hub``),
from a device that connects with its certificate: both through HUB_MQTT_TLS_* and the
agent's tls_* settings, against the shipped broker configuration."""

from __future__ import annotations

from typing import Any

from cloud_hub.security import broker_auth as ba
from tests.conftest import HubFactory, make_event, wait_until
from tests.security.conftest import HUB_USER, Client, PrivateBroker


def test_hub_stores_an_event_sent_over_tls(
    broker: PrivateBroker, hub_factory: HubFactory, clients: list[Client], db: Any
) -> None:
    certs = broker.certs
    ba.issue_cert(certs, certs, HUB_USER)
    hub = hub_factory.start(
        topic_root=broker.topic_root,
        mqtt_host="localhost",  # the server certificate's name
        mqtt_port=broker.tls_port,
        mqtt_tls_ca=certs / "ca.pem",
        mqtt_tls_cert=certs / f"{HUB_USER}.pem",
        mqtt_tls_key=certs / f"{HUB_USER}.key",
    )
    assert hub.request("/healthz")[0] == 200  # connected and subscribed over TLS

    device = Client(broker.tls_config("dev-a", host="localhost"))
    clients.append(device)
    assert device.connect() is not None and device.connected.is_set()
    event = make_event("dev-a", "cam-1")
    topic = f"{broker.topic_root}/v1/dev-a/events/cam-1"
    assert device.publish(topic, event.model_dump_json().encode()).value == 0

    def stored() -> bool:
        return bool(db("SELECT 1 FROM person_events WHERE event_id = $1", event.event_id))

    wait_until(stored, 20, "the event stored by the hub")
    assert "u'hub'" in broker.log()  # the hub's certificate CN became its username
