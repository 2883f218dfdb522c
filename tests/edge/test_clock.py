"""The clock rule (issue 12): no event leaves the agent stamped before its clock was set.

A device without a real-time clock boots at 1970; the hub dead-letters anything before
``EARLIEST_EVENT_TIME``. The agent holds such events and re-stamps them from the
monotonic clock once the wall clock is set; entries a previous boot left in the outbox
with 1970 stamps can never be fixed and are discarded, counted. The clocks here are
injected (``AgentClock(wall, mono)``); the system clock is never touched.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.config import AgentConfig
from edge_agent.contract import (
    DEFAULT_TIME_BOUNDS,
    EARLIEST_EVENT_TIME,
    DeviceState,
    DeviceStatus,
    EventTopic,
    PersonEvent,
    parse_event,
    parse_status,
    status_topic,
)
from edge_agent.delivery.clock import HOLD_FULL, NEVER_SET, AgentClock, ClockGate
from edge_agent.delivery.outbox import DB_NAME, Outbox
from edge_agent.delivery.publisher import MqttPublisher
from edge_agent.device.live_config import LiveSettings
from edge_agent.device.metrics import AgentMetrics
from edge_agent.device.telemetry import CameraMeter, Telemetry
from edge_agent.runner import run_agent, run_cameras
from tests.conftest import MQTT_HOST, MQTT_PORT, make_event, wait_until
from tests.edge.broker_tools import Watcher, clear_retained
from tests.mqtt_subscriber import Subscriber
from tests.paths import WALK_AND_PAUSE

BOOT = datetime(1970, 1, 1, tzinfo=UTC)  # where a clock without a battery starts
SYNCED = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


class BootClock:
    """A device's clocks: monotonic seconds since boot, and a wall clock that reads
    1970 + uptime until ``sync`` sets it (as NTP would) so that monotonic ``at`` is
    ``wall``."""

    def __init__(self, mono: float = 0.0) -> None:
        self.mono = mono
        self.offset = BOOT  # wall = offset + mono
        self.clock = AgentClock(lambda: self.offset + timedelta(seconds=self.mono), self.now)

    def now(self) -> float:
        return self.mono

    def sync(self, wall: datetime) -> None:
        self.offset = wall - timedelta(seconds=self.mono)


def at(clock_time: str) -> datetime:
    """A time on 2026-05-01 (UTC), written out by hand."""
    return datetime.fromisoformat(f"2026-05-01T{clock_time}+00:00")


def stamped(first: float, last: float, clock: BootClock) -> PersonEvent:
    """An event seen at monotonic ``first``..``last``, stamped by the clock as it was."""
    wall = clock.clock.wall_at
    event = make_event(last_seen=wall(last), dwell_s=last - first)
    return event.model_copy(update={"first_seen": wall(first)})


def test_events_before_the_clock_is_set_are_held_then_restamped_from_the_monotonic_clock() -> None:
    boot = BootClock(mono=100.0)
    published: list[PersonEvent] = []
    gate = ClockGate(published.append, boot.clock)
    early = [stamped(101.25, 103.75, boot), stamped(104.0, 110.5, boot)]
    for event, (first, last) in zip(early, [(101.25, 103.75), (104.0, 110.5)], strict=True):
        assert event.first_seen.year == 1970
        gate.offer(event, first, last)
    boot.mono = 120.0
    assert gate.release() == 0, "nothing goes while the clock still says 1970"
    assert published == [] and gate.held() == 2

    boot.mono = 125.0
    boot.sync(SYNCED)  # NTP: monotonic 125.0 is 10:00:00
    later = stamped(126.0, 128.0, boot)
    gate.offer(later, 126.0, 128.0)
    # Held ones first, in order, re-stamped: 10:00:00 - (125.0 - mono).
    assert [e.event_id for e in published] == [*(e.event_id for e in early), later.event_id]
    assert [(e.first_seen, e.last_seen) for e in published] == [
        (at("09:59:36.25"), at("09:59:38.75")),
        (at("09:59:39"), at("09:59:45.5")),
        (at("10:00:01"), at("10:00:03")),
    ]
    assert [e.dwell_s for e in published] == [2.5, 6.5, 2.0]
    assert gate.held() == 0 and gate.restamped == 2 and not gate.discarded
    for event in published:  # what a hub checks
        DEFAULT_TIME_BOUNDS.check("first_seen", event.first_seen, SYNCED)


def test_a_gate_never_publishes_what_it_cannot_fix() -> None:
    boot = BootClock(mono=50.0)
    published: list[PersonEvent] = []
    gate = ClockGate(published.append, boot.clock, limit=2)
    for i in range(3):
        gate.offer(stamped(51.0 + i, 52.0 + i, boot), 51.0 + i, 52.0 + i)
    # No monotonic time (e.g. a file's own timeline) and a 1970 stamp: dropped at once.
    gate.offer(stamped(60.0, 61.0, boot), None, None)
    assert gate.held() == 2
    assert gate.discarded == {HOLD_FULL: 1, "clock_unset_stamp": 1}
    assert gate.close() == 2, "the clock was never set: what waited is lost, counted"
    assert gate.discarded[NEVER_SET] == 2
    assert published == []


def held_metric(metrics: AgentMetrics) -> float:
    """``edge_agent_events_held`` as a scrape reads it."""
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "edge_agent_events_held":
                return float(sample.value)
    raise AssertionError("no edge_agent_events_held gauge")


def test_the_agent_holds_its_events_until_ntp_then_publishes_them_with_true_times() -> None:
    """The real pipeline on the real clip, on a device whose clock reads 1970 (monotonic
    = the real one): no event goes out until the clock is set, and then each carries the
    time at which it was really seen on the synced timeline."""
    synced = threading.Event()
    base = {"offset": BOOT}

    def wall() -> datetime:
        return base["offset"] + timedelta(seconds=time.monotonic())

    clock = AgentClock(wall, time.monotonic)
    published: list[tuple[PersonEvent, bool]] = []
    gate = ClockGate(lambda event: published.append((event, synced.is_set())), clock)
    config = AgentConfig.model_validate(
        {
            "metrics": {"port": 0},
            "cameras": [
                {"id": "door", "source": str(WALK_AND_PAUSE), "loop": True, "realtime": True}
            ],
        }
    )
    meter = CameraMeter("door")
    metrics = AgentMetrics([meter], Outbox(None), gate=gate)
    stop = threading.Event()
    started = time.monotonic()
    agent = threading.Thread(
        target=run_cameras,
        args=(config, gate.publish, stop),
        kwargs={"meters": [meter], "clock": clock, "gate": gate},
        daemon=True,
    )
    agent.start()
    try:
        wait_until(lambda: gate.held() >= 3, 120, "a pass of people held for the clock")
        held = gate.held()
        assert published == []
        assert held_metric(metrics) >= held
        # NTP: the true time now is SYNCED.
        at_sync = time.monotonic()
        base["offset"] = SYNCED - timedelta(seconds=at_sync)
        synced.set()
        wait_until(lambda: len(published) >= held + 3, 60, "the held events and new ones")
    finally:
        stop.set()
        agent.join(60)
    finished = time.monotonic()  # people still in view at the stop came out during join
    assert all(after_sync for _, after_sync in published), "nothing went out before NTP"
    # A paced file's media clock starts when it opens, after ``started``.
    true_start = SYNCED - timedelta(seconds=at_sync - started)
    true_end = SYNCED + timedelta(seconds=finished - at_sync)
    for event, _ in published:
        assert event.first_seen > EARLIEST_EVENT_TIME
        assert true_start <= event.first_seen <= event.last_seen <= true_end, event
        assert abs((event.last_seen - event.first_seen).total_seconds() - event.dwell_s) < 1e-3
    early = [e for e, _ in published[:held]]
    assert all(e.last_seen <= SYNCED for e in early), "seen before the sync, stamped so"
    assert gate.restamped >= held


def test_outbox_entries_from_a_boot_at_1970_are_discarded_not_published(
    topic_root: str, tmp_path: Path
) -> None:
    """An outbox left by an earlier boot (an agent that stamped at 1970) beside a sound
    entry: the agent publishes the sound one, never the 1970 one, and counts it."""
    device = f"clock-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    topic = str(EventTopic(topic_root, device, "door"))
    stale = make_event(device, "door", last_seen=BOOT + timedelta(minutes=3))
    sound = make_event(device, "door")
    leftover = Outbox(state / DB_NAME)
    for event in (stale, sound):
        leftover.append(topic, event.model_dump_json().encode())
    leftover.close()
    config = AgentConfig.model_validate(
        {
            "device_id": device,
            "state_dir": str(state),
            "metrics": {"port": 0},
            "mqtt": {"host": MQTT_HOST, "port": MQTT_PORT, "topic_root": topic_root},
            "cameras": [{"id": "door", "source": str(WALK_AND_PAUSE)}],
        }
    )
    subscriber = Subscriber(topic_root)
    try:
        sent = run_agent(config)  # the clip ends, the outbox drains, the agent stops
        wait_until(lambda: len(subscriber.received()) >= 1 + sent, 30, "the events")
        time.sleep(0.5)
        received = [parse_event(t, p, root=topic_root) for t, p, _ in subscriber.received()]
    finally:
        subscriber.close()
    ids = [e.event_id for e in received]
    assert stale.event_id not in ids
    assert sound.event_id in ids and sent == 3 and len(ids) == 4
    reopened = Outbox(state / DB_NAME)
    try:
        assert reopened.discarded == 1 and reopened.depth() == 0
        text = AgentMetrics([], reopened).render().decode()
        assert 'edge_agent_events_discarded_total{reason="clock_unset_stamp"} 1.0' in text
    finally:
        reopened.close()


def test_no_health_or_occupancy_is_sent_while_the_clock_is_not_set(topic_root: str) -> None:
    """Telemetry carries the device's time; a hub refuses it before 2020, so none is sent
    until the clock is set (on a connected publisher, so only the clock stops it)."""
    boot = BootClock(mono=30.0)
    config = AgentConfig.model_validate(
        {"mqtt": {"host": MQTT_HOST, "port": MQTT_PORT, "topic_root": topic_root}}
    )
    publisher = MqttPublisher(config.mqtt, client_id=f"clock-{uuid.uuid4().hex[:6]}")
    publisher.start()
    try:
        assert publisher.connected.is_set()
        meters = [CameraMeter("door")]
        live = LiveSettings(config)
        telemetry = Telemetry(publisher, "dev-clock", meters, Outbox(None), live, boot.clock)
        telemetry.send_health()
        telemetry.send_occupancy()
        assert (telemetry.sent_health, telemetry.sent_occupancy) == (0, 0)
        boot.sync(SYNCED)
        telemetry.send_health()
        telemetry.send_occupancy()
        assert (telemetry.sent_health, telemetry.sent_occupancy) == (1, 1)
        assert telemetry.health().at == SYNCED
    finally:
        publisher.close(timeout_s=1.0)


def test_no_online_status_is_sent_while_the_clock_is_not_set(topic_root: str) -> None:
    """A status carries the device's time too: the online status waits for the clock
    (the last will, which has no time, still covers the device meanwhile), then goes out
    stamped on the set clock."""
    boot = BootClock(mono=30.0)
    device = f"clock-{uuid.uuid4().hex[:6]}"
    config = AgentConfig.model_validate(
        {"mqtt": {"host": MQTT_HOST, "port": MQTT_PORT, "topic_root": topic_root}}
    )

    def build(online: bool) -> bytes:
        state = DeviceState.ONLINE if online else DeviceState.OFFLINE
        status = DeviceStatus(
            device_id=device, state=state, at=boot.clock.now(), agent_version="test"
        )
        return status.model_dump_json().encode()

    subscriber = Watcher([f"{topic_root}/#"])
    publisher = MqttPublisher(config.mqtt, client_id=device)
    topic = status_topic(topic_root, device)
    publisher.set_status(
        topic, build, DeviceStatus.last_will(device).model_dump_json().encode(), boot.clock.is_set
    )
    publisher.start()
    try:
        assert publisher.connected.is_set()
        publisher.status_changed()  # also due since the connect
        time.sleep(2.5)  # two turns of the publisher's pump
        assert subscriber.received() == []
        boot.sync(SYNCED)
        received = wait_until(lambda: subscriber.received("/status"), 10, "the online status")
        status = parse_status(received[0][0], received[0][1], root=topic_root)
        assert status is not None and status.state is DeviceState.ONLINE
        assert status.at is not None and status.at >= SYNCED
    finally:
        publisher.close(timeout_s=1.0)
        subscriber.close()
        clear_retained([topic])
