"""The agent publishing to the real Mosquitto on 127.0.0.1:1883, over MQTT 3.1.1 and 5."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, MqttConfig
from edge_agent.contract import Gender, parse_event
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.publisher import MqttPublisher
from edge_agent.runner import run_agent
from tests.conftest import MQTT_HOST, MQTT_PORT, make_event, wait_until
from tests.mqtt_subscriber import Subscriber
from tests.paths import WALK_AND_PAUSE
from tests.relay import Relay


@pytest.fixture
def subscriber(topic_root: str) -> Iterator[Subscriber]:
    sub = Subscriber(topic_root)
    yield sub
    sub.close()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_run_agent_publishes_the_clips_events(
    protocol: str, topic_root: str, subscriber: Subscriber, tmp_path: Path
) -> None:
    device = f"edge-{uuid.uuid4().hex[:6]}"
    config = AgentConfig.model_validate(
        {
            "device_id": device,
            "state_dir": str(tmp_path / "agent-state"),
            "mqtt": {
                "host": MQTT_HOST,
                "port": MQTT_PORT,
                "protocol": protocol,
                "topic_root": topic_root,
            },
            "cameras": [{"id": "entrance", "source": str(WALK_AND_PAUSE)}],
        }
    )
    sent = run_agent(config)
    assert sent == 3
    messages = wait_until(lambda: len(subscriber.received()) >= 3 and subscriber.received())
    time.sleep(0.3)  # anything extra (a duplicate) would arrive by now
    messages = subscriber.received()
    assert len(messages) == 3
    expected_topic = f"{topic_root}/v1/{device}/events/entrance"
    events = []
    for topic, payload, qos in messages:
        assert topic == expected_topic
        assert qos == 1
        events.append(parse_event(topic, payload, root=topic_root))
    assert {e.device_id for e in events} == {device}
    assert len({e.event_id for e in events}) == 3
    assert Counter(e.gender.value for e in events if e.gender) == {
        Gender.FEMALE: 2,
        Gender.MALE: 1,
    }
    assert all(e.age is not None for e in events)


def test_publisher_reports_unacknowledged_when_the_broker_is_absent(
    free_port: Callable[[], int], topic_root: str
) -> None:
    config = MqttConfig(host="127.0.0.1", port=free_port(), topic_root=topic_root)
    publisher = MqttPublisher(config, client_id=f"absent-{uuid.uuid4().hex[:6]}")
    started = time.monotonic()
    publisher.start(timeout_s=0.5)
    assert not publisher.connected.is_set()
    publisher.publish(make_event())
    publisher.publish(make_event())
    assert publisher.published == 2
    closing = time.monotonic()
    left = publisher.close(timeout_s=1.0)
    assert left == 2
    assert time.monotonic() - closing < 5.0, "close must give up after its timeout"
    assert time.monotonic() - started < 10.0


def test_publisher_acknowledged_messages_are_not_counted(
    topic_root: str, subscriber: Subscriber
) -> None:
    config = MqttConfig(host=MQTT_HOST, port=MQTT_PORT, protocol="5", topic_root=topic_root)
    publisher = MqttPublisher(config, client_id=f"ack-{uuid.uuid4().hex[:6]}")
    publisher.start(timeout_s=10)
    assert publisher.connected.is_set()
    event = make_event("dev-ack", "cam-1")
    publisher.publish(event)
    wait_until(lambda: publisher.unacknowledged() == 0, 10, "the broker's PUBACK")
    assert publisher.close(timeout_s=5) == 0
    (topic, payload, qos), *_ = wait_until(subscriber.received, 10, "the event")
    assert topic == f"{topic_root}/v1/dev-ack/events/cam-1" and qos == 1
    assert parse_event(topic, payload, root=topic_root) == event


def test_events_published_while_the_broker_was_away_are_delivered_and_acknowledged(
    free_port: Callable[[], int], topic_root: str, subscriber: Subscriber
) -> None:
    """The broker is unreachable when the agent starts and comes back later: paho keeps
    the QoS 1 message, sends it on reconnect, and ``close`` counts it as acknowledged."""
    port = free_port()
    config = MqttConfig(host="127.0.0.1", port=port, topic_root=topic_root)
    publisher = MqttPublisher(config, client_id=f"late-{uuid.uuid4().hex[:6]}")
    publisher.start(timeout_s=0.3)
    assert not publisher.connected.is_set()
    event = make_event("dev-late", "cam-1")
    publisher.publish(event)
    relay = Relay(port, MQTT_PORT)
    try:
        assert publisher.connected.wait(15), "no reconnect through the relay"
        (topic, payload, qos), *_ = wait_until(subscriber.received, 15, "the queued event")
        assert parse_event(topic, payload, root=topic_root) == event and qos == 1
        assert publisher.close(timeout_s=5) == 0
    finally:
        relay.close()


def test_events_nobody_subscribes_to_wait_in_the_outbox(topic_root: str, tmp_path: Path) -> None:
    """MQTT 5: a PUBACK saying "no matching subscribers" does not delete the event; it is
    sent again until a subscriber (the hub) is there to take it."""
    outbox = Outbox.in_dir(tmp_path, 1000, 10_000_000)
    config = MqttConfig(host=MQTT_HOST, port=MQTT_PORT, protocol="5", topic_root=topic_root)
    publisher = MqttPublisher(config, client_id=f"unheard-{uuid.uuid4().hex[:6]}", outbox=outbox)
    publisher.start()
    events = [make_event("dev-u", "cam-1", track_id=i) for i in range(5)]
    try:
        for event in events:
            publisher.publish(event)
        time.sleep(2.5)  # PUBACKs (0x10) are back by now, and at least one resend happened
        assert publisher.unacknowledged() == 5, "events nobody received must stay queued"
        late = Subscriber(topic_root)
        try:
            wait_until(lambda: publisher.unacknowledged() == 0, 40, "delivery to the subscriber")
            ids = {parse_event(t, p, root=topic_root).event_id for t, p, _ in late.received()}
        finally:
            late.close()
    finally:
        publisher.close(timeout_s=2)
    assert ids == {e.event_id for e in events}
