"""The fleet simulator against the real broker and a running hub: every event it sends is
stored as sent (contract-valid, right devices and cameras, returns naming earlier simulated
events), status shows the devices online while it runs and offline after a clean stop, the
last will turns a killed simulator's devices offline, health and occupancy arrive."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_hub.tools.simulate import SimConfig, Simulator
from cloud_hub.tools.simulated_fleet import backfill_times
from edge_agent.contract import PersonEvent, status_topic
from tests.conftest import MQTT_HOST, MQTT_PORT, HubFactory, RunningHub, wait_until

EVENT_COLUMNS = """event_id, device_id, camera_id, track_id, first_seen, last_seen, dwell_s,
    gender, gender_confidence, age, age_low, age_high, age_confidence, direction, crops,
    models, return_of, watcher, attention_s"""


def _devices(hub: RunningHub, prefix: str) -> dict[str, dict[str, Any]]:
    return {d["device_id"]: d for d in hub.get("/v1/devices") if d["device_id"].startswith(prefix)}


def _clear_retained(root: str, device_ids: list[str]) -> None:
    """Leave no retained statuses behind in the shared broker."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"test-clear-{uuid.uuid4().hex[:8]}"
    )
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    try:
        infos = [client.publish(status_topic(root, d), b"", qos=1, retain=True) for d in device_ids]
        for info in infos:
            info.wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def _row_as_event(row: Any) -> PersonEvent:
    """Rebuild the contract model from a stored row (validates it again). A row without
    attention is a schema 1 event (schema 2 always carries it), whose watcher is implied."""
    gender = (
        None
        if row["gender"] is None
        else {"value": row["gender"], "confidence": row["gender_confidence"]}
    )
    age = (
        None
        if row["age"] is None
        else {
            "value": row["age"],
            "low": row["age_low"],
            "high": row["age_high"],
            "confidence": row["age_confidence"],
        }
    )
    schema_1 = row["attention_s"] is None
    return PersonEvent.model_validate(
        {
            "schema_version": 1 if schema_1 else 2,
            "watcher": None if schema_1 else row["watcher"],
            "attention_s": row["attention_s"],
            "event_id": row["event_id"],
            "device_id": row["device_id"],
            "camera_id": row["camera_id"],
            "track_id": row["track_id"],
            "first_seen": row["first_seen"],
            "last_seen": row["last_seen"],
            "dwell_s": row["dwell_s"],
            "gender": gender,
            "age": age,
            "direction": row["direction"],
            "crops": row["crops"],
            "models": row["models"]
            if isinstance(row["models"], dict)
            else json.loads(row["models"]),
            "return_of": row["return_of"],
        }
    )


def test_simulated_fleet_is_stored_as_sent(hub_factory: HubFactory, db: Any) -> None:
    hub = hub_factory.start()
    prefix = f"s{hub.topic_root[-6:]}"
    config = SimConfig(
        devices=4,
        cameras=3,
        rate=150,
        count=450,
        topic_root=hub.topic_root,
        seed=11,
        device_prefix=prefix,
        health_interval_s=1.0,
        occupancy_interval_s=1.0,
    )
    sim = Simulator(config)
    sim.keep_events = True
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(sim.run()))
    runner.start()
    expected_devices = {f"{prefix}-{i:03d}" for i in range(4)}
    try:
        # While it runs: every device online, with its cameras live and its health.
        online = wait_until(
            lambda: (
                found
                if len(found := _devices(hub, prefix)) == 4
                and all(d["state"] == "online" for d in found.values())
                else None
            ),
            20,
            "the simulated devices online",
        )
        assert set(online) == expected_devices
        for found in online.values():
            assert found["agent_version"] == "sim-0.1"
            assert [c["camera_id"] for c in found["cameras"]] == ["cam-1", "cam-2", "cam-3"]
            assert all(c["state"] == "live" for c in found["cameras"])
    finally:
        runner.join(60)
    assert done, "the simulator did not finish"
    summary = done[0]
    assert summary.events == 450 and len(sim.sent_events) == 450
    assert summary.statuses == 8  # online and offline, each acknowledged
    assert summary.health >= 4 and summary.occupancy >= 12

    sent = {e.event_id: e for e in sim.sent_events}
    assert {e.device_id for e in sent.values()} == expected_devices
    assert {e.camera_id for e in sent.values()} == {"cam-1", "cam-2", "cam-3"}

    def stored() -> list[Any]:
        rows = db(f"SELECT {EVENT_COLUMNS} FROM person_events WHERE event_id = ANY($1)", list(sent))
        return rows if len(rows) == len(sent) else []

    rows = wait_until(stored, 30, "every simulated event in the database")
    for row in rows:
        event = _row_as_event(row)
        original = sent[event.event_id]
        inexact = {"dwell_s", "attention_s", "gender", "age"}
        assert event.model_dump(exclude=inexact) == original.model_dump(exclude=inexact)
        assert abs(event.dwell_s - original.dwell_s) < 1e-3  # stored as real
        assert abs((event.attention_s or 0) - (original.attention_s or 0)) < 1e-3
        assert (event.gender is None) == (original.gender is None)
        assert (event.age is None) == (original.age is None)
        if original.gender is not None:
            assert event.gender is not None and event.gender.value == original.gender.value
    # Realistic mix: both genders, several age bands, directions, and some returns, each
    # naming an earlier first visit of the same device.
    genders = {e.gender.value for e in sent.values() if e.gender}
    assert genders == {"female", "male"}
    assert {e.watcher for e in sent.values()} == {True, False}  # watchers and passers-by
    assert all(e.gender is None and e.age is None for e in sent.values() if not e.watcher)
    returns = [e for e in sent.values() if e.return_of is not None]
    assert 0 < len(returns) < len(sent) // 3
    for event in returns:
        earlier = sent[event.return_of]  # type: ignore[index]
        assert earlier.device_id == event.device_id and earlier.return_of is None
        assert earlier.last_seen <= event.last_seen
    assert not db("SELECT 1 FROM rejected_messages WHERE topic LIKE $1", f"{hub.topic_root}/%")
    counts = db(
        "SELECT device_id, count(*) AS n FROM person_events WHERE device_id LIKE $1 GROUP BY 1",
        f"{prefix}-%",
    )
    assert {r["device_id"]: r["n"] for r in counts} == {
        d: sum(1 for e in sent.values() if e.device_id == d) for d in expected_devices
    }
    occupancy = db(
        "SELECT count(DISTINCT (device_id, camera_id)) FROM occupancy_minutely"
        " WHERE device_id LIKE $1",
        f"{prefix}-%",
    )
    assert occupancy[0][0] == 12

    # A clean stop says offline (and keeps what the devices run).
    def all_offline() -> dict[str, dict[str, Any]] | None:
        found = _devices(hub, prefix)
        return found if all(d["state"] == "offline" for d in found.values()) else None

    after = wait_until(all_offline, 20, "the devices offline after the simulator stopped")
    assert all(d["events"] > 0 and d["health"] is not None for d in after.values())
    _clear_retained(hub.topic_root, sorted(expected_devices))


def test_cli_runs_and_last_will_marks_killed_devices_offline(hub_factory: HubFactory) -> None:
    hub = hub_factory.start()
    prefix = f"k{hub.topic_root[-6:]}"
    command = [
        sys.executable,
        "-m",
        "cloud_hub.cli",
        "simulate",
        "--devices",
        "3",
        "--cameras",
        "2",
        "--rate",
        "20",
        "--duration",
        "120",
        "--topic-root",
        hub.topic_root,
        "--prefix",
        prefix,
        "--seed",
        "3",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ids = [f"{prefix}-{i:03d}" for i in range(3)]
    try:
        wait_until(
            lambda: (
                all(
                    d.get("state") == "online" and d["events"] > 0
                    for d in _devices(hub, prefix).values()
                )
                and len(_devices(hub, prefix)) == 3
            ),
            30,
            "devices online with events",
        )
        process.send_signal(signal.SIGKILL)  # no clean disconnect: the broker sends the wills
        process.wait(10)
        wait_until(
            lambda: all(d["state"] == "offline" for d in _devices(hub, prefix).values()),
            20,
            "the last wills",
        )
        assert all(d["status_at"] is None for d in _devices(hub, prefix).values())

        # A short clean run through the CLI prints what it sent and exits 0.
        short = subprocess.run(
            [*command[:-6], "--count", "60", "--rate", "0", *command[-6:]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert short.returncode == 0, short.stdout + short.stderr
        assert "sent 60 events from 3 devices x 2 cameras" in short.stdout
    finally:
        if process.poll() is None:
            process.kill()
        _clear_retained(hub.topic_root, ids)


def test_backfill_follows_the_daily_shape() -> None:
    import random

    end = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # a Wednesday midnight
    times = list(backfill_times(20_000, 2, random.Random(1), end))
    assert times == sorted(times) and times[0] >= end - timedelta(days=2) and times[-1] <= end
    by_hour = [0] * 24
    for moment in times:
        by_hour[moment.hour] += 1
    assert by_hour[12] > 20 * by_hour[3]  # lunch peak vs the middle of the night
