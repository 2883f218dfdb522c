"""``cloud-hub up --exit-after-demo``: the newcomer's first command, end to end.

Runs the real edge agent on the demo clip, so these also check that the hub and the agent
agree on the contract and on the generated agent configuration.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def _run_up(env_overrides: dict[str, str], tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env |= {"HUB_STATE_DIR": str(tmp_path / "state"), "HUB_LOG_FORMAT": "console"}
    env |= env_overrides
    done = subprocess.run(
        [sys.executable, "-m", "cloud_hub.cli", "up", "--exit-after-demo"],
        env=env,
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


def test_up_uses_the_running_services(
    database_url: str, topic_root: str, free_port: Any, tmp_path: Path, db: Any
) -> None:
    out = _run_up(
        {
            "HUB_DATABASE_URL": database_url,
            "HUB_TOPIC_ROOT": topic_root,
            "HUB_MQTT_CLIENT_ID": f"hub-{topic_root}",
            "HUB_HTTP_PORT": str(free_port()),
        },
        tmp_path,
    )
    assert "MQTT: broker at 127.0.0.1:1883" in out
    assert "PostgreSQL: postgresql://" in out
    assert "/v1/stats" in out and "/docs" in out
    new = _new_events(out)
    assert new >= 1
    total_row = next(line for line in out.splitlines() if line.startswith("TOTAL"))
    assert int(total_row.split()[1]) >= new
    rows = db("SELECT count(*) FROM person_events WHERE device_id = 'first-run'")
    assert rows[0][0] >= new
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
