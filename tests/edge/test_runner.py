"""``edge-agent run`` as a service: clean stop on SIGTERM, a broken camera beside a good one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from edge_agent.contract import parse_event
from tests.conftest import MQTT_HOST, MQTT_PORT, free_port, wait_until
from tests.mqtt_subscriber import Subscriber
from tests.paths import WALK_AND_PAUSE


def write_config(path: Path, root: str, device: str, cameras: list[tuple[str, str, bool]]) -> Path:
    lines = [
        f'device_id = "{device}"',
        f'state_dir = "{path.parent / "agent-state"}"',
        "[mqtt]",
        f'host = "{MQTT_HOST}"',
        f"port = {MQTT_PORT}",
        f'topic_root = "{root}"',
    ]
    for camera_id, source, loop in cameras:
        lines += [
            "[[cameras]]",
            f'id = "{camera_id}"',
            f"source = {json.dumps(source)}",
            f"loop = {'true' if loop else 'false'}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
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
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )


def log_events(log: Path) -> list[dict[str, object]]:
    """The agent's JSON log lines (structlog), skipping anything else it printed."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_sigterm_stops_cleanly_and_counts_people_still_in_view(
    topic_root: str, tmp_path: Path
) -> None:
    device = f"run-{uuid.uuid4().hex[:6]}"
    config = write_config(
        tmp_path / "agent.toml", topic_root, device, [("door", str(WALK_AND_PAUSE), True)]
    )
    subscriber = Subscriber(topic_root)
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        # The looping clip: three people per pass; stop in the middle of a later pass.
        wait_until(lambda: len(subscriber.received()) >= 3, 120, "a first pass of events")
        time.sleep(1.5)
        before_stop = len(subscriber.received())
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0, log.read_text()[-3000:]
        time.sleep(0.5)
        received = subscriber.received()
    finally:
        if agent.poll() is None:
            agent.kill()
        subscriber.close()
    events = [parse_event(t, p, root=topic_root) for t, p, _ in received]
    assert len({e.event_id for e in events}) == len(events), "nothing published twice"
    assert len(events) > before_stop, "people in view at the stop must still be published"
    stopped = [e for e in log_events(log) if e.get("event") == "agent_stopped"]
    assert stopped and stopped[0]["unacknowledged"] == 0
    assert stopped[0]["events"] == len(events)


def test_a_dead_stream_does_not_stop_a_working_camera(topic_root: str, tmp_path: Path) -> None:
    device = f"run-{uuid.uuid4().hex[:6]}"
    dead = f"http://127.0.0.1:{free_port()}/stream.mp4"
    config = write_config(
        tmp_path / "agent.toml",
        topic_root,
        device,
        [
            ("good", str(WALK_AND_PAUSE), False),
            ("dead", dead, False),
            ("missing", str(tmp_path / "no-such.mp4"), False),
        ],
    )
    subscriber = Subscriber(topic_root)
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        wait_until(lambda: len(subscriber.received()) >= 3, 120, "the working camera's events")

        def retried() -> bool:
            tries = [
                e
                for e in log_events(log)
                if e.get("event") == "camera_reconnecting" and e.get("camera") == "dead"
            ]
            return len(tries) >= 2

        wait_until(retried, 30, "the dead stream to be retried with backoff")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        subscriber.close()
    topics = {t for t, _, _ in subscriber.received()}
    assert topics == {f"{topic_root}/v1/{device}/events/good"}
    assert len(subscriber.received()) == 3
    entries = log_events(log)
    failed = {e.get("camera") for e in entries if e.get("event") == "camera_source_failed"}
    assert {"dead", "missing"} <= failed
    delays = [
        float(str(e["retry_s"]))
        for e in entries
        if e.get("event") == "camera_reconnecting" and e.get("camera") == "dead"
    ]
    assert delays[:2] == [1.0, 2.0], "backoff doubles"
    missing = [
        float(str(e["retry_s"]))
        for e in entries
        if e.get("event") == "camera_reconnecting" and e.get("camera") == "missing"
    ]
    # A file that is not there yet may come (a mount, a copy): retried like a stream.
    assert missing[:2] == [1.0, 2.0], "a missing file is retried with the same backoff"
