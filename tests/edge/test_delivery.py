"""Delivery through the outbox over the real Mosquitto: outages, a bounded in-flight
window, order, and what survives a publisher that goes away without acknowledgements."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.config import MqttConfig
from edge_agent.contract import PersonEvent, parse_event
from edge_agent.delivery.outbox import DB_NAME, Outbox
from edge_agent.delivery.publisher import MqttPublisher
from tests.conftest import MQTT_PORT, make_event, wait_until
from tests.mqtt_subscriber import Subscriber
from tests.relay import Relay


@pytest.fixture
def subscriber(topic_root: str) -> Iterator[Subscriber]:
    sub = Subscriber(topic_root)
    yield sub
    sub.close()


def delivered_ids(subscriber: Subscriber, root: str) -> list[str]:
    return [str(parse_event(t, p, root=root).event_id) for t, p, _ in subscriber.received()]


def first_seen_order(ids: list[str]) -> list[str]:
    """Ids in the order of their first arrival (a resent duplicate keeps its place)."""
    return list(dict.fromkeys(ids))


def test_an_outage_with_many_events_keeps_a_bounded_window_and_delivers_in_order(
    free_port: Callable[[], int], topic_root: str, subscriber: Subscriber, tmp_path: Path
) -> None:
    """Events pile up on disk while the broker is unreachable; paho never holds more than
    the window; when the broker is back all arrive, in the order they were written."""
    port = free_port()
    config = MqttConfig(host="127.0.0.1", port=port, topic_root=topic_root)
    outbox = Outbox(tmp_path / DB_NAME)
    publisher = MqttPublisher(
        config, client_id=f"outage-{uuid.uuid4().hex[:6]}", outbox=outbox, inflight=8
    )
    publisher.start(timeout_s=0.2)
    events = [make_event("dev-out", "cam-1", track_id=i) for i in range(400)]
    for event in events:
        publisher.publish(event)
    wait_until(lambda: publisher.in_flight() == 8, 5, "the window to fill")
    time.sleep(0.3)
    assert publisher.in_flight() == 8 and publisher.max_inflight_seen == 8
    assert outbox.depth() == 400
    relay = Relay(port, MQTT_PORT)
    try:
        wait_until(lambda: outbox.depth() == 0, 30, "every event acknowledged")
        ids = wait_until(
            lambda: len(set(got := delivered_ids(subscriber, topic_root))) >= 400 and got, 10
        )
        assert first_seen_order(ids) == [str(e.event_id) for e in events]
        assert publisher.max_inflight_seen == 8
        assert publisher.close(timeout_s=5) == 0
    finally:
        relay.close()


def test_a_connection_cut_mid_stream_loses_nothing_and_keeps_order(
    free_port: Callable[[], int], topic_root: str, subscriber: Subscriber, tmp_path: Path
) -> None:
    port = free_port()
    relay = Relay(port, MQTT_PORT)
    config = MqttConfig(host="127.0.0.1", port=port, topic_root=topic_root)
    outbox = Outbox(tmp_path / DB_NAME)
    publisher = MqttPublisher(config, client_id=f"cut-{uuid.uuid4().hex[:6]}", outbox=outbox)
    try:
        publisher.start(timeout_s=5)
        assert publisher.connected.is_set()
        events = [make_event("dev-cut", "cam-1", track_id=i) for i in range(300)]
        for event in events[:100]:
            publisher.publish(event)
        relay.down()
        for event in events[100:200]:
            publisher.publish(event)
        time.sleep(0.5)
        assert outbox.depth() >= 100
        relay.up()
        for event in events[200:]:
            publisher.publish(event)
        wait_until(lambda: outbox.depth() == 0, 30, "every event acknowledged")
        ids = wait_until(
            lambda: len(set(got := delivered_ids(subscriber, topic_root))) >= 300 and got, 10
        )
        assert first_seen_order(ids) == [str(e.event_id) for e in events]
        duplicates = len(ids) - len(set(ids))
        assert duplicates <= publisher.inflight_window, "only a lost window is sent twice"
        print(f"\ncut test: 300 written, {len(set(ids))} delivered, {duplicates} duplicates")
        assert publisher.close(timeout_s=5) == 0
    finally:
        relay.close()


def test_entries_left_by_a_publisher_that_never_got_acks_are_replayed_by_the_next(
    free_port: Callable[[], int], topic_root: str, subscriber: Subscriber, tmp_path: Path
) -> None:
    path = tmp_path / DB_NAME
    absent = MqttConfig(host="127.0.0.1", port=free_port(), topic_root=topic_root)
    first = MqttPublisher(absent, client_id=f"r1-{uuid.uuid4().hex[:6]}", outbox=Outbox(path))
    first.start(timeout_s=0.2)
    events: list[PersonEvent] = [make_event("dev-replay", "cam-1", track_id=i) for i in range(30)]
    for event in events:
        first.publish(event)
    assert first.close(timeout_s=0.2) == 30
    assert subscriber.received() == []

    present = absent.model_copy(update={"host": "127.0.0.1", "port": 1883})
    second = MqttPublisher(present, client_id=f"r2-{uuid.uuid4().hex[:6]}", outbox=Outbox(path))
    second.start(timeout_s=5)
    later = make_event("dev-replay", "cam-1", track_id=99)
    second.publish(later)
    wait_until(lambda: second.unacknowledged() == 0, 15, "the replay acknowledged")
    ids = wait_until(lambda: len(got := delivered_ids(subscriber, topic_root)) >= 31 and got, 10)
    assert ids == [str(e.event_id) for e in [*events, later]], "replayed first, in order"
    assert second.close(timeout_s=5) == 0
