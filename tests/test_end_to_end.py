"""Camera to REST through real parts: agent -> Mosquitto -> hub -> PostgreSQL -> /v1/stats.

One clip shows two women and a man walking up and stopping, facing the camera (three
passers-by, three watchers); the other six people walking in one at a time with their
backs to it (six passers-by, no watcher). The agent runs as its own process with its
service command, the hub as another; the test only watches the broker and asks the API.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edge_agent.contract import PersonEvent
from tests.conftest import MQTT_HOST, MQTT_PORT, RunningHub, publish_messages, wait_until
from tests.mqtt_subscriber import Subscriber
from tests.paths import VIDEO, WALK_AND_PAUSE

ONE_BY_ONE = VIDEO / "intel_one-by-one-person-detection.mp4"


def write_agent_config(
    path: Path, topic_root: str, device_id: str, source: Path = WALK_AND_PAUSE
) -> Path:
    path.write_text(
        f"""device_id = "{device_id}"
state_dir = "{path.parent / "agent-state"}"

[mqtt]
host = "{MQTT_HOST}"
port = {MQTT_PORT}
topic_root = "{topic_root}"

[[cameras]]
id = "entrance"
source = "{source}"
"""
    )
    return path


def run_agent(config: Path) -> None:
    """The agent's service command over the config's clip, to its end."""
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


def test_people_with_their_backs_to_the_camera_are_passers_by(
    hub: RunningHub, tmp_path: Path
) -> None:
    device_id = f"e2e-{uuid.uuid4().hex[:6]}"
    config = write_agent_config(tmp_path / "agent.toml", hub.topic_root, device_id, ONE_BY_ONE)
    run_agent(config)
    query = f"/v1/stats?device_id={device_id}&bucket=day"
    stats = wait_until(
        lambda: (s := hub.get(query))["totals"]["passers_by"] >= 6 and s, 30, "six stored events"
    )
    totals = stats["totals"]
    assert (totals["passers_by"], totals["watchers"]) == (6, 0)
    assert totals["watcher_rate"] == 0.0 and totals["mean_attention_s"] is None
    assert totals["mean_dwell_s"] > 5.0  # each stands at the table for seconds
    assert totals["gender"] == {"female": 0, "male": 0, "unknown": 0}  # watchers only


def test_three_people_counted_once_each(
    hub: RunningHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device_id = f"e2e-{uuid.uuid4().hex[:6]}"
    config = write_agent_config(tmp_path / "agent.toml", hub.topic_root, device_id)
    recorder = Subscriber(hub.topic_root)
    try:
        run_agent(config)
        wait_until(lambda: len(recorder.received()) >= 3, 20, "the agent's events on the broker")
    finally:
        recorder.close()

    query = f"/v1/stats?device_id={device_id}&bucket=hour"
    stats = wait_until(
        lambda: (s := hub.get(query))["totals"]["total"] >= 3 and s, 30, "three stored events"
    )
    messages = [(topic, payload) for topic, payload, _ in recorder.received()]
    events = [PersonEvent.model_validate_json(payload) for _, payload in messages]
    for e in events:
        assert e.gender and e.age, e
        # What corrected shares need: P(female) agreeing with the label, band masses.
        assert e.p_female is not None and (e.p_female >= 0.5) == (e.gender.value == "female")
        assert e.age_bands is not None and abs(sum(e.age_bands) - 1.0) < 0.01
    with capsys.disabled():  # shown in CI's log: what the pipeline estimated
        print()
        for e in events:
            assert e.gender and e.age
            print(
                f"track {e.track_id}: {e.gender.value.value} ({e.gender.confidence:.2f}), "
                f"age {e.age.value:.0f} [{e.age.low:.0f}-{e.age.high:.0f}], "
                f"dwell {e.dwell_s:.1f}s, {e.crops} crops"
            )
    totals = stats["totals"]
    assert len(messages) == 3, "each person must be published exactly once"
    assert totals["total"] == totals["passers_by"] == totals["watchers"] == 3
    assert totals["watcher_rate"] == 1.0 and totals["mean_attention_s"] > 1.0
    assert totals["gender"] == {"female": 2, "male": 1, "unknown": 0}
    assert totals["age"]["unknown"] == 0, "every person must have an age"
    assert len({e.event_id for e in events}) == 3

    # Redelivery (a broker resend, an agent replay): same events, same answers.
    duplicates_before = hub.metric("hub_events_duplicate_total")
    publish_messages(messages)
    wait_until(
        lambda: hub.metric("hub_events_duplicate_total") >= duplicates_before + 3,
        20,
        "the hub to see the redelivered events",
    )
    assert hub.get(query)["totals"] == totals
    page = hub.get(f"/v1/events?device_id={device_id}&limit=100")
    assert sorted(r["event_id"] for r in page["events"]) == sorted(str(e.event_id) for e in events)
    stored = {r["event_id"]: r["p_female"] for r in page["events"]}
    assert stored == {str(e.event_id): pytest.approx(e.p_female) for e in events}
    shares = hub.get(query + "&shares=true")["shares"]
    assert shares["gender"]["watchers"] == 3 and shares["age"]["watchers"] == 3
