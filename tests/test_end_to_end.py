"""Camera to REST through real parts: agent -> Mosquitto -> hub -> PostgreSQL -> /v1/stats.

The clip shows two women and a man walking up and stopping. The agent runs as its own
process with its service command, the hub as another; the test only watches the broker
and asks the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contract import PersonEvent, events_subscription
from tests.conftest import MQTT_HOST, MQTT_PORT, RunningHub, publish_messages, wait_until
from tests.paths import WALK_AND_PAUSE


class Recorder:
    """Subscribes like a live consumer would and keeps every raw message it sees."""

    def __init__(self, topic_root: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"rec-{uuid.uuid4().hex[:8]}"
        )
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect(MQTT_HOST, MQTT_PORT)
        self._client.subscribe(events_subscription(topic_root), qos=1)
        self._client.loop_start()
        assert self._subscribed.wait(10), "recorder could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def write_agent_config(path: Path, topic_root: str, device_id: str) -> Path:
    path.write_text(
        f"""device_id = "{device_id}"

[mqtt]
host = "{MQTT_HOST}"
port = {MQTT_PORT}
topic_root = "{topic_root}"

[[cameras]]
id = "entrance"
source = "{WALK_AND_PAUSE}"
"""
    )
    return path


def test_three_people_counted_once_each(hub: RunningHub, tmp_path: Path) -> None:
    device_id = f"e2e-{uuid.uuid4().hex[:6]}"
    config = write_agent_config(tmp_path / "agent.toml", hub.topic_root, device_id)
    recorder = Recorder(hub.topic_root)
    try:
        agent = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "--log-format",
                "json",
                "run",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ),
        )
        assert agent.returncode == 0, agent.stderr[-3000:]
        wait_until(lambda: len(recorder.messages) >= 3, 20, "the agent's events on the broker")
    finally:
        recorder.close()

    query = f"/v1/stats?device_id={device_id}&bucket=hour"
    stats = wait_until(
        lambda: (s := hub.get(query))["totals"]["total"] >= 3 and s, 30, "three stored events"
    )
    events = [PersonEvent.model_validate_json(p) for _, p in recorder.messages]
    for e in events:
        assert e.gender and e.age, e
        print(
            f"track {e.track_id}: {e.gender.value.value} ({e.gender.confidence:.2f}), "
            f"age {e.age.value:.0f} [{e.age.low:.0f}-{e.age.high:.0f}], "
            f"dwell {e.dwell_s:.1f}s, {e.crops} crops"
        )
    totals = stats["totals"]
    assert len(recorder.messages) == 3, "each person must be published exactly once"
    assert totals["total"] == 3
    assert totals["gender"] == {"female": 2, "male": 1, "unknown": 0}
    assert totals["age"]["unknown"] == 0, "every person must have an age"
    assert len({e.event_id for e in events}) == 3

    # Redelivery (a broker resend, an agent replay): same events, same answers.
    duplicates_before = hub.metric("hub_events_duplicate_total")
    publish_messages(recorder.messages)
    wait_until(
        lambda: hub.metric("hub_events_duplicate_total") >= duplicates_before + 3,
        20,
        "the hub to see the redelivered events",
    )
    assert hub.get(query)["totals"] == totals
    page = hub.get(f"/v1/events?device_id={device_id}&limit=100")
    assert sorted(r["event_id"] for r in page["events"]) == sorted(str(e.event_id) for e in events)
