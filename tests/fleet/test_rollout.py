"""The Ansible roles against real targets: lint, install twice, files, agents online, and
a rolling update that stops at the first unhealthy device.

The tests share one booted fleet (tests/fleet/conftest.py) and run in file order: the
rolling update comes last because it changes what the devices run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import wait_until
from tests.fleet.conftest import (
    ANSIBLE_DIR,
    BROKER,
    CLIP,
    DEVICES,
    NEW_VERSION,
    OLD_VERSION,
    TLS_DEVICE,
    TOPIC_ROOT,
    Fleet,
    PlaybookRun,
)
from tests.paths import REPO

PREFIX = "/opt/edge-agent"


class StatusWatch:
    """The hub's view: every device's retained status, read from the fleet's broker."""

    def __init__(self, fleet: Fleet) -> None:
        self.latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fleet-test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set("hub", fleet.passwords["hub"])
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(f"{TOPIC_ROOT}/v1/+/status", qos=1)
        self.client.connect(fleet.broker.address, 1883, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.split("/")[2]
        with self._lock:
            self.latest[device] = json.loads(msg.payload)

    def status(self, device_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.latest.get(device_id)

    def wait_for(self, device_id: str, version: str, timeout_s: float = 90) -> dict[str, Any]:
        """Until the device says it is online with this agent version."""

        def check() -> dict[str, Any] | None:
            status = self.status(device_id)
            if status and status["state"] == "online" and status["agent_version"] == version:
                return status
            return None

        found: dict[str, Any] = wait_until(
            check, timeout_s, f"{device_id} online with agent {version}: {self.status(device_id)}"
        )
        return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def installed(fleet: Fleet) -> tuple[PlaybookRun, PlaybookRun]:
    """site.yml twice: the first installs the broker and the agents, the second nothing.
    All three devices in one batch (edge_serial): a fresh install has nothing to protect."""
    first = fleet.playbook("site.yml", "-e", "edge_serial=3")
    second = fleet.playbook("site.yml", "-e", "edge_serial=3")
    return first, second


@pytest.fixture(scope="module")
def watch(fleet: Fleet, installed: tuple[PlaybookRun, PlaybookRun]) -> Iterator[StatusWatch]:
    w = StatusWatch(fleet)
    yield w
    w.close()


def _release(fleet: Fleet, host: str, link: str = "current") -> str:
    return os.readlink(fleet.devices[host].path(f"{PREFIX}/{link}"))


def _service(fleet: Fleet, host: str, *props: str) -> dict[str, str]:
    args = " ".join(f"-p {p}" for p in props)
    out = fleet.devices[host].ssh(f"systemctl show edge-agent {args}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _ids(root: Path, db: str, name: str) -> int:
    """uid/gid of a user/group inside the target (from its /etc/passwd or /etc/group)."""
    for line in (root / "etc" / db).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"no {name} in the target's /etc/{db}")


def test_ansible_lint_production_profile() -> None:
    """ansible/ passes ansible-lint's strictest profile (its config: ansible/.ansible-lint)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-lint"), "--nocolor"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Profile 'production' was required, and it passed" in output, output[-2000:]


def test_second_run_changes_nothing(installed: tuple[PlaybookRun, PlaybookRun]) -> None:
    """Idempotence, from the PLAY RECAP: every host changed=0 on the second run."""
    first, second = installed
    hosts = {BROKER, *DEVICES}
    assert set(first.recap) == hosts and set(second.recap) == hosts, second.tail()
    assert all(first.recap[h]["changed"] > 0 for h in hosts), first.recap
    for host, counts in second.recap.items():
        assert counts["changed"] == 0, f"{host} changed on the second run:\n{second.tail()}"
        assert counts["failed"] == 0 and counts["unreachable"] == 0, second.tail()


def test_agent_files_and_credentials(fleet: Fleet, installed: Any) -> None:
    """The unit, the configuration and the credentials are what the inventory says."""
    for host, target in fleet.devices.items():
        root = target.root
        unit = target.path("/etc/systemd/system/edge-agent.service").read_text()
        assert (
            f"ExecStart={PREFIX}/current/venv/bin/edge-agent run --config "
            "/etc/edge-agent/agent.toml" in unit
        )
        for line in ("User=edge-agent", "Restart=always", "MemoryMax=1G", "CPUQuota=100%"):
            assert f"\n{line}\n" in unit, line
        for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet="):
            assert f"\n{line}\n" in unit, line

        config_path = target.path("/etc/edge-agent/agent.toml")
        config = tomllib.loads(config_path.read_text())
        assert config["device_id"] == fleet.device_id(host)
        assert config["models_dir"] == f"{PREFIX}/current/models"
        mqtt_section: dict[str, Any] = {
            "host": fleet.broker.address,
            "port": 1883,
            "topic_root": TOPIC_ROOT,
            "username": fleet.device_id(host),
            "password_file": "/etc/edge-agent/mqtt-password",
        }
        if host == TLS_DEVICE:
            tls = {"tls_ca": "ca.pem", "tls_cert": "client.pem", "tls_key": "client.key"}
            mqtt_section |= {k: f"/etc/edge-agent/tls/{v}" for k, v in tls.items()} | {"port": 8883}
            given = fleet.certs / f"{fleet.device_id(host)}.key"
            key = target.path("/etc/edge-agent/tls/client.key")
            assert key.read_text() == given.read_text()
            assert oct(key.stat().st_mode & 0o777) == "0o640"
            assert (key.stat().st_uid, key.stat().st_gid) == (0, _ids(root, "group", "edge-agent"))
        assert config["mqtt"] == mqtt_section
        assert config["cameras"] == [
            {"id": "door", "source": f"/srv/video/{CLIP}", "loop": True, "realtime": True, "fps": 2}
        ]
        secret = target.path("/etc/edge-agent/mqtt-password")
        assert secret.read_text() == fleet.passwords[host] + "\n"
        assert fleet.passwords[host] not in config_path.read_text()
        for path in (config_path, secret):  # the agent reads them and cannot change them
            st = path.stat()
            assert oct(st.st_mode & 0o777) == "0o640"
            assert st.st_uid == 0
            assert st.st_gid == _ids(root, "group", "edge-agent")

        state = target.path("/var/lib/edge-agent").stat()
        assert state.st_uid == _ids(root, "passwd", "edge-agent")
        assert oct(state.st_mode & 0o777) == "0o750"
        assert _release(fleet, host) == f"{PREFIX}/releases/{OLD_VERSION}"
        manifest = json.loads((REPO / "models/dist/manifest.json").read_text())
        for entry in manifest["models"].values():
            assert target.path(
                f"{PREFIX}/releases/{OLD_VERSION}/models/{entry['file']['name']}"
            ).is_file()


def test_broker_files(fleet: Fleet, installed: Any) -> None:
    """The broker runs the shipped configuration and ACL, with one user per device."""
    conf = fleet.broker.path("/etc/mosquitto/audience")
    shipped = REPO / "deploy" / "mosquitto"
    assert (conf / "acl").read_text() == (shipped / "acl").read_text()
    assert (conf / "mosquitto.conf").read_text() == (shipped / "mosquitto.conf").read_text()
    assert (conf / "conf.d" / "tls.conf").read_text() == (shipped / "tls.conf").read_text()
    key = conf / "certs" / "server.key"
    assert key.read_text() == (fleet.certs / "server.key").read_text()
    assert oct(key.stat().st_mode & 0o777) == "0o640"
    users = [line.split(":")[0] for line in (conf / "passwd").read_text().splitlines()]
    assert sorted(users) == sorted(["hub", *(fleet.device_id(d) for d in DEVICES)])
    assert oct((conf / "passwd").stat().st_mode & 0o777) == "0o640"
    active = fleet.broker.ssh("systemctl is-active mosquitto", check=False).stdout.strip()
    assert active == "active"


def test_agents_run_and_publish_online(fleet: Fleet, watch: StatusWatch) -> None:
    """Under systemd on each target the agent runs with its limits, is healthy, and its
    retained ``online`` status reaches the broker through the per-device credentials
    (a password on 1883, or TLS_DEVICE's client certificate on 8883)."""
    for host, target in fleet.devices.items():
        props = _service(fleet, host, "ActiveState", "MemoryMax", "User")
        assert props == {"ActiveState": "active", "MemoryMax": str(1 << 30), "User": "edge-agent"}
        health = target.ssh(
            "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:9108/healthz').read().decode())\""
        )
        assert json.loads(health.stdout)["cameras"] == {"door": "live"}
        status = watch.wait_for(fleet.device_id(host), OLD_VERSION)
        assert status["cameras"][0]["camera_id"] == "door"


def test_rolling_update_stops_at_the_unhealthy_device(fleet: Fleet, watch: StatusWatch) -> None:
    """serial 1, max_fail_percentage 0: dev1 updates, dev2's health check fails (its
    camera does not exist), the play stops; dev3 keeps its release and its process. The
    rollback playbook then puts dev2 back on the release it ran."""
    dev3_before = _service(fleet, "dev3", "MainPID", "ExecMainStartTimestamp")
    (fleet.inventory / "host_vars" / "dev2.yml").write_text(
        json.dumps(
            {
                "edge_agent_device_id": fleet.device_id("dev2"),
                "edge_agent_cameras": [{"id": "door", "source": "/srv/video/no-such-clip.mp4"}],
            }
        )
    )
    run = fleet.playbook(
        "edge.yml",
        "-e",
        json.dumps(
            {
                "edge_agent_version": NEW_VERSION,
                "edge_agent_health_retries": 10,
                "edge_agent_health_delay": 2,
            }
        ),
        expect_rc=None,
    )
    assert run.returncode != 0, run.tail()
    assert run.recap["dev1"]["failed"] == 0, run.tail()
    assert run.recap["dev2"]["failed"] == 1, run.tail()
    assert "dev3" not in run.recap, run.tail()
    assert "did not report every camera live" in run.output

    assert _release(fleet, "dev1") == f"{PREFIX}/releases/{NEW_VERSION}"
    assert _release(fleet, "dev1", "previous") == f"{PREFIX}/releases/{OLD_VERSION}"
    watch.wait_for(fleet.device_id("dev1"), NEW_VERSION)

    # dev2 switched and failed its gate: left on the new release for the operator.
    assert _release(fleet, "dev2") == f"{PREFIX}/releases/{NEW_VERSION}"
    assert _release(fleet, "dev2", "previous") == f"{PREFIX}/releases/{OLD_VERSION}"

    assert _release(fleet, "dev3") == f"{PREFIX}/releases/{OLD_VERSION}"
    assert not fleet.devices["dev3"].path(f"{PREFIX}/releases/{NEW_VERSION}").exists()
    assert _service(fleet, "dev3", "MainPID", "ExecMainStartTimestamp") == dev3_before
    assert watch.status(fleet.device_id("dev3"))["agent_version"] == OLD_VERSION  # type: ignore[index]

    # Its camera is still broken, so do not wait for /healthz after the switch.
    back = fleet.playbook("rollback.yml", "-l", "dev2", "-e", '{"edge_agent_health_wait": false}')
    assert back.recap["dev2"]["failed"] == 0
    assert _release(fleet, "dev2") == f"{PREFIX}/releases/{OLD_VERSION}"
    assert _release(fleet, "dev2", "previous") == f"{PREFIX}/releases/{NEW_VERSION}"
    assert _service(fleet, "dev2", "ActiveState")["ActiveState"] == "active"
    watch.wait_for(fleet.device_id("dev2"), OLD_VERSION)
