"""``edge-agent run`` against the real Mosquitto: a SIGKILL mid-stream loses nothing the
outbox held, the last will marks the device offline, status/health/occupancy arrive and
validate, and a pushed config is applied (or its error reported) without a crash."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.contract import (
    CameraState,
    DesiredConfig,
    DeviceState,
    DeviceStatus,
    TrackerSettings,
    config_topic,
    parse_event,
    parse_health,
    parse_occupancy,
    parse_status,
    status_topic,
)
from edge_agent.delivery.outbox import DB_NAME
from tests.conftest import MQTT_HOST, MQTT_PORT, wait_until
from tests.edge.broker_tools import (
    Watcher,
    clear_retained,
    publish_retained,
    retained,
)
from tests.edge.test_runner import log_events
from tests.faults.harness import journal_ids, journal_outbox
from tests.paths import WALK_AND_PAUSE
from tests.relay import Relay

AGENT_COMMAND = (sys.executable, "-m", "edge_agent.cli", "--log-format", "json", "run")


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``edge-agent run`` with unbuffered output, so the test can read its log live."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*AGENT_COMMAND, "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def agent_config(path: Path, root: str, device: str, port: int, state_dir: Path) -> Path:
    path.write_text(
        f"""device_id = "{device}"
state_dir = {json.dumps(str(state_dir))}

[mqtt]
host = "{MQTT_HOST}"
port = {port}
topic_root = "{root}"
keepalive_s = 5

[health]
interval_s = 1
occupancy_interval_s = 1

[[cameras]]
id = "door"
source = {json.dumps(str(WALK_AND_PAUSE))}
loop = true
"""
    )
    return path


@pytest.fixture
def device(topic_root: str) -> Iterator[str]:
    """A device id whose retained status and config are removed after the test."""
    name = f"svc-{uuid.uuid4().hex[:6]}"
    yield name
    clear_retained([status_topic(topic_root, name), config_topic(topic_root, name)])


@pytest.fixture
def watcher(topic_root: str) -> Iterator[Watcher]:
    watch = Watcher([f"{topic_root}/#"])
    yield watch
    watch.close()


def outbox_ids(state_dir: Path) -> list[str]:
    """Event ids stored in an agent's outbox, in insertion order (read like any reader)."""
    with sqlite3.connect(state_dir / DB_NAME) as db:
        rows = db.execute("SELECT payload FROM outbox ORDER BY id").fetchall()
    return [json.loads(payload)["event_id"] for (payload,) in rows]


def event_ids(watcher: Watcher, root: str) -> list[str]:
    return [str(parse_event(t, p, root=root).event_id) for t, p, _ in watcher.received("/events/")]


def statuses(watcher: Watcher, root: str) -> list[DeviceStatus]:
    out = []
    for topic, payload, _ in watcher.received("/status"):
        status = parse_status(topic, payload, root=root)
        if status is not None:
            out.append(status)
    return out


def stop(agent: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if agent.poll() is None:
        agent.send_signal(sig)
    return agent.wait(timeout=60)


def test_sigkill_mid_stream_loses_nothing_and_the_last_will_says_offline(
    topic_root: str,
    device: str,
    watcher: Watcher,
    tmp_path: Path,
    free_port: Callable[[], int],
) -> None:
    port = free_port()
    relay = Relay(port, MQTT_PORT)
    state = tmp_path / "state"
    config = agent_config(tmp_path / "agent.toml", topic_root, device, port, state)
    journal_outbox(state)  # records every row the agent ever writes to its outbox
    agent = start_agent(config, tmp_path / "run1.log")
    try:
        # Run 1: events flow; then the network goes, events pile up on disk; SIGKILL.
        wait_until(lambda: len(event_ids(watcher, topic_root)) >= 3, 120, "first events")
        relay.down()
        wait_until(lambda: len(outbox_ids(state)) >= 3, 120, "events kept in the outbox")
        agent.kill()
        agent.wait(timeout=30)
        before = event_ids(watcher, topic_root)
        delivered_before = set(before)
        stored = outbox_ids(state)
        # What run 1 wrote, from the journal, not from the outbox it left behind: an event
        # deleted before its PUBACK is gone from the outbox but not from the journal.
        written = set(journal_ids(state))
        assert delivered_before | set(stored) <= written
        # The broker saw the connection drop: the retained status is the last will.
        will = wait_until(
            lambda: (s := statuses(watcher, topic_root)) and s[-1].state is DeviceState.OFFLINE,
            15,
            "the last will",
        )
        assert will and statuses(watcher, topic_root)[-1].at is None

        # Run 2, same state dir, network back: the outbox is replayed, in order.
        relay.up()
        agent = start_agent(config, tmp_path / "run2.log")
        wait_until(lambda: set(stored) <= set(event_ids(watcher, topic_root)), 120, "the replay")
        after = event_ids(watcher, topic_root)
        # Run 2 sends every stored entry again, even one whose PUBACK the kill cut off.
        replayed = [i for i in dict.fromkeys(after[len(before) :]) if i in set(stored)]
        assert replayed == stored, "replayed in insertion order"
        lost = written - set(after)
        assert not lost, f"{len(lost)} of the {len(written)} events run 1 wrote never arrived"
        online = wait_until(
            lambda: (s := statuses(watcher, topic_root)) and s[-1].state is DeviceState.ONLINE,
            15,
            "online again",
        )
        assert online

        # SIGKILL while connected: the broker publishes the will, retained.
        agent.kill()
        agent.wait(timeout=30)
        wait_until(
            lambda: statuses(watcher, topic_root)[-1].state is DeviceState.OFFLINE, 15, "will"
        )
        payload = retained(status_topic(topic_root, device))
        assert payload is not None
        kept = parse_status(status_topic(topic_root, device), payload, root=topic_root)
        assert kept is not None and kept.state is DeviceState.OFFLINE and kept.at is None
        duplicates = len(after) - len(set(after))
        print(
            f"\nkill test: {len(written)} written by run 1, {len(delivered_before)} delivered "
            f"before the cut, {len(stored)} in the outbox at SIGKILL, {len(set(after))} "
            f"distinct delivered after the restart, {duplicates} duplicates, 0 lost"
        )
    finally:
        if agent.poll() is None:
            agent.kill()
        relay.close()


def test_status_health_occupancy_and_live_config(
    topic_root: str, device: str, watcher: Watcher, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = agent_config(tmp_path / "agent.toml", topic_root, device, MQTT_PORT, state)
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        first = wait_until(lambda: statuses(watcher, topic_root), 60, "an online status")[0]
        assert first.state is DeviceState.ONLINE and first.agent_version
        assert [c.camera_id for c in first.cameras] == ["door"]
        assert first.config_version is None and first.outbox_dropped == 0

        # Health and occupancy, every second.
        wait_until(lambda: len(watcher.received("/health")) >= 2, 60, "two health messages")
        healths = [parse_health(t, p, root=topic_root) for t, p, _ in watcher.received("/health")]
        assert any(h.cameras and h.cameras[0].fps_processed > 0 for h in healths)
        assert any("detect" in h.latency_ms for h in healths)
        assert all(h.memory_mb > 10 and h.outbox_depth >= 0 for h in healths)
        wait_until(
            lambda: any(
                parse_occupancy(t, p, root=topic_root).people > 0
                for t, p, _ in watcher.received("/occupancy/")
            ),
            60,
            "someone in view",
        )
        status = wait_until(
            lambda: (
                (s := statuses(watcher, topic_root))
                and s[-1].cameras[0].state is CameraState.LIVE
                and s[-1]
            ),
            30,
            "the camera live with its models",
        )
        assert status.models

        # A valid config: applied between frames, reported in the status.
        desired = DesiredConfig(version="v-hits-5", tracker=TrackerSettings(min_hits=5))
        topic = config_topic(topic_root, device)
        publish_retained(topic, desired.model_dump_json().encode())
        wait_until(
            lambda: statuses(watcher, topic_root)[-1].config_version == "v-hits-5",
            15,
            "the applied version in the status",
        )
        applied = wait_until(
            lambda: [e for e in log_events(log) if e.get("event") == "camera_settings_applied"],
            30,
            "the camera thread to take the settings between frames",
        )
        assert applied[0]["min_hits"] == 5 and applied[0]["config_version"] == "v-hits-5"

        # An invalid one: reported, the previous stays, the agent keeps running.
        bad = json.dumps({"schema_version": 1, "version": "v-bad", "tracker": {"min_hits": 0}})
        publish_retained(topic, bad.encode())
        last = wait_until(
            lambda: (s := statuses(watcher, topic_root)[-1]).config_error and s,
            15,
            "the config error in the status",
        )
        assert "min_hits" in (last.config_error or "")
        assert last.config_version == "v-hits-5"
        publish_retained(topic, b"not json")
        wait_until(
            lambda: "json" in (statuses(watcher, topic_root)[-1].config_error or "").lower(),
            15,
            "garbage reported",
        )
        assert agent.poll() is None, "an invalid config must not stop the agent"

        # Clean stop: a retained offline status with a time.
        assert stop(agent) == 0, log.read_text()[-3000:]
        payload = retained(status_topic(topic_root, device))
        assert payload is not None
        final = parse_status(status_topic(topic_root, device), payload, root=topic_root)
        assert final is not None and final.state is DeviceState.OFFLINE and final.at is not None
    finally:
        if agent.poll() is None:
            agent.kill()
