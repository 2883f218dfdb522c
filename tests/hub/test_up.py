"""``cloud-hub up --exit-after-demo``: the newcomer's first command, end to end.

Runs the real edge agent on the demo clip, so these also check that the hub and the agent
agree on the contract and on the generated agent configuration. A source it cannot play
must be one line on stderr and a non-zero exit before anything starts, and the numbers it
prints must be this run's, with an earlier run's events in the same database.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud_hub.tools.up import source_problem
from edge_agent.tools.demo_clip import make_demo_clip
from tests.conftest import HubFactory, make_event, publish_event_list, wait_until


def _env(env_overrides: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env |= {"HUB_STATE_DIR": str(tmp_path / "state"), "HUB_LOG_FORMAT": "console"}
    return env | env_overrides


def _run_up(env_overrides: dict[str, str], tmp_path: Path, *source: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cloud_hub.cli", "up", "--exit-after-demo", *source],
        env=_env(env_overrides, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _new_events(out: str) -> int:
    match = re.search(r"The agent is done: (\d+) new event", out)
    assert match, out
    return int(match.group(1))


def _run_device(out: str) -> str:
    match = re.search(r"Starting the edge agent as device (\S+) ", out)
    assert match, out
    return match.group(1)


def test_up_uses_the_running_services(
    database_url: str,
    topic_root: str,
    free_port: Any,
    tmp_path: Path,
    db: Any,
    hub_factory: HubFactory,
) -> None:
    # An earlier run's events (under the id every run had before) and another device's,
    # stored in the last hour: up must neither count nor print them as this run's.
    earlier = [
        make_event("first-run", "cam-1", last_seen=datetime.now(UTC) - timedelta(minutes=5)),
        make_event("other-device", "cam-1", last_seen=datetime.now(UTC) - timedelta(minutes=3)),
    ]
    # Its session must not outlive it: a queued shared subscription would take this
    # run's events.
    earlier_hub = hub_factory.start(mqtt_session_expiry_s=0, share_group="earlier")
    publish_event_list(topic_root, earlier)
    wait_until(
        lambda: (
            db(
                "SELECT count(*) FROM person_events WHERE event_id = ANY($1::uuid[])",
                [e.event_id for e in earlier],
            )[0][0]
            == 2
        ),
        what="the earlier run's events stored",
    )
    earlier_hub.stop()
    clip = make_demo_clip(tmp_path / "clip" / "demo.mp4")  # given as a path: checked first

    out = _run_up(
        {
            "HUB_DATABASE_URL": database_url,
            "HUB_TOPIC_ROOT": topic_root,
            "HUB_MQTT_CLIENT_ID": f"up-{topic_root}",
            "HUB_HTTP_PORT": str(free_port()),
        },
        tmp_path,
        str(clip),
    )
    assert "MQTT: broker at 127.0.0.1:1883" in out
    assert "PostgreSQL: postgresql://" in out
    assert "/v1/stats" in out and "/docs" in out
    device = _run_device(out)
    assert device.startswith("first-run-") and device != "first-run"
    assert f'device_id = "{device}"' in (tmp_path / "state" / "agent.toml").read_text()
    new = _new_events(out)
    assert new >= 1
    assert f"(device={device})" in out  # the table is this run's device only
    total_row = next(line for line in out.splitlines() if line.startswith("TOTAL"))
    assert int(total_row.split()[1]) == new  # not one of the earlier events
    rows = db("SELECT count(*) FROM person_events WHERE device_id = $1", device)
    assert rows[0][0] == new
    assert db("SELECT count(*) FROM person_events WHERE device_id = 'first-run'")[0][0] == 1
    assert 'protocol = "5"' in (tmp_path / "state" / "agent.toml").read_text()


def _distinct_free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_up_starts_embedded_broker_and_postgres(tmp_path: Path) -> None:
    mqtt_port, pg_port, http_port = _distinct_free_ports(3)
    out = _run_up(
        {
            # Nothing listens on these ports, so up must start its own services.
            "HUB_MQTT_PORT": str(mqtt_port),
            "HUB_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_port}/audience",
            "HUB_HTTP_PORT": str(http_port),
            "HUB_MQTT_CLIENT_ID": "hub-embedded-test",
        },
        tmp_path,
    )
    assert "started embedded amqtt" in out
    assert "started embedded in" in out
    assert _new_events(out) >= 1
    assert (tmp_path / "state" / "pgdata" / "PG_VERSION").exists()
    assert 'protocol = "3.1.1"' in (tmp_path / "state" / "agent.toml").read_text()


def _unplayable(kind: str, tmp_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "no" / "such" / "file.mp4"
    if kind == "directory":
        (tmp_path / "videos").mkdir()
        return tmp_path / "videos"
    path = tmp_path / "clip.mp4"
    if kind == "garbage":
        path.write_bytes(random.Random(12).randbytes(64 * 1024))
    else:  # text
        path.write_text("not a video\n" * 100)
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "no such file"),
        ("directory", "is a directory"),
        ("garbage", "OpenCV cannot"),
        ("text", "OpenCV cannot"),
    ],
)
def test_up_refuses_a_source_it_cannot_play(
    kind: str, reason: str, tmp_path: Path, free_port: Any
) -> None:
    source = _unplayable(kind, tmp_path)
    started = time.monotonic()
    done = subprocess.run(
        # No --exit-after-demo: the command a person types, which would otherwise serve on.
        [sys.executable, "-m", "cloud_hub.cli", "up", str(source)],
        # Nothing answers on these ports: had up started anything, it would be embedded
        # services (slow, and writing to the state directory).
        env=_env(
            {
                "HUB_MQTT_PORT": str(free_port()),
                "HUB_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/audience",
                "HUB_HTTP_PORT": str(free_port()),
            },
            tmp_path,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"cloud-hub up: {source}: "), lines
    assert reason in lines[0], lines
    assert done.stdout == ""  # no hub URLs, no statistics: nothing ran
    assert not (tmp_path / "state").exists()
    assert elapsed < 15, f"took {elapsed:.1f} s"


def test_live_sources_are_not_checked_up_front(tmp_path: Path) -> None:
    for source in (
        "0",
        "1",
        "rtsp://127.0.0.1:1/stream",
        "http://127.0.0.1:1/cam.mjpg",
        "https://example.invalid/live",
        "videotestsrc ! videoconvert ! appsink",
    ):
        assert source_problem(source) is None, source
    clip = make_demo_clip(tmp_path / "demo.mp4")
    assert source_problem(str(clip)) is None
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    assert source_problem(str(cut)) is not None
