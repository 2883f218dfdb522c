"""The fleet the Ansible tests deploy to: a broker and three devices, booted for real.

Targets come from tests/fleet/targets.py (debootstrap root, overlay, systemd-nspawn,
own network namespace and sshd). The controller side is what an operator has: the
wheelhouse (ansible/scripts/build-wheelhouse.sh; dependency wheels cached by a hash of
pyproject.toml), models/dist, and an inventory written here in the example's layout.
Nothing is skipped: a missing tool, clip or model fails with what to run.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloud_hub.security import broker_auth
from tests.fleet import targets
from tests.paths import REPO, VIDEO

ANSIBLE_DIR = REPO / "ansible"
MODELS = REPO / "models" / "dist"
CLIP = "intel_face-demographics-walking-and-pause.mp4"
OLD_VERSION = "0.1.0"
NEW_VERSION = "0.1.1"
DEVICES = ["dev1", "dev2", "dev3"]
TLS_DEVICE = "dev3"  # connects to the broker's TLS listener with a client certificate
BROKER = "broker1"
TOPIC_ROOT = "audience"
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class PlaybookRun:
    """One ansible-playbook run: exit status, output, and the PLAY RECAP per host."""

    returncode: int
    output: str
    recap: dict[str, dict[str, int]]
    seconds: float

    def tail(self, chars: int = 6000) -> str:
        return self.output[-chars:]


@dataclass
class Fleet:
    """The booted targets, the inventory that reaches them, and the secrets it holds."""

    broker: targets.Target
    devices: dict[str, targets.Target]
    inventory: Path
    workdir: Path
    passwords: dict[str, str]
    certs: Path
    runs: list[PlaybookRun] = field(default_factory=list)

    def device_id(self, host: str) -> str:
        return f"store1-{host}"

    def playbook(self, name: str, *args: str, expect_rc: int | None = 0) -> PlaybookRun:
        """Run a playbook from ansible/ against this fleet's inventory."""
        env = dict(os.environ)
        env |= {
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            "ANSIBLE_HOME": str(self.workdir / "ansible-home"),
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        }
        command = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(self.inventory),
            name,
            *args,
        ]
        start = time.monotonic()
        result = subprocess.run(
            command, cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=600
        )
        output = result.stdout + result.stderr
        log = self.workdir / f"run-{len(self.runs) + 1}-{name}.log"
        log.write_text(output)
        recap_text = output.split("PLAY RECAP", 1)[-1]
        recap = {
            m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
            for m in RECAP.finditer(recap_text)
        }
        run = PlaybookRun(result.returncode, output, recap, time.monotonic() - start)
        self.runs.append(run)
        if expect_rc is not None:
            assert result.returncode == expect_rc, f"{name} {args}: rc {result.returncode}\n" + (
                run.tail()
            )
        return run


def _fail_without_prerequisites() -> None:
    """Fail (never skip) with the command that provides what is missing."""
    if os.geteuid() != 0:
        pytest.fail("tests/fleet boot containers and network namespaces: run them as root")
    missing = targets.missing_tools()
    if missing:
        pytest.fail(f"tests/fleet need {', '.join(missing)}: run .ci/fleet-tools.sh")
    if not (VIDEO / CLIP).is_file():
        pytest.fail(f"tests/fleet play {VIDEO / CLIP} as the cameras' source: it is missing")
    if not (MODELS / "manifest.json").is_file():
        pytest.fail("models/dist is not built: run `make setup` (python models/build.py)")


def _build_wheel(source: Path, out: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )


def _dependency_wheels() -> Path:
    """The `edge` extra's wheels, built once per pyproject.toml and script version by the
    operator's script."""
    key = hashlib.sha256(sys.version.encode())
    for source in ("pyproject.toml", "ansible/scripts/build-wheelhouse.sh"):
        key.update((REPO / source).read_bytes())
    key.update((ANSIBLE_DIR / "scripts" / "device_requirements.py").read_bytes())
    cached = targets.FLEET_CACHE / f"wheelhouse-{key.hexdigest()[:12]}"
    with targets._locked(targets.FLEET_CACHE / "wheelhouse.lock"):
        if not (cached / ".complete").exists():
            shutil.rmtree(cached, ignore_errors=True)
            result = subprocess.run(
                [str(ANSIBLE_DIR / "scripts" / "build-wheelhouse.sh"), str(cached)],
                env=dict(os.environ, PYTHON=sys.executable),
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, f"build-wheelhouse.sh failed:\n{result.stderr[-3000:]}"
            for wheel in cached.glob("audience_edge-*.whl"):
                wheel.unlink()  # the project's own wheel is built fresh every session
            (cached / ".complete").touch()
        for stale in targets.FLEET_CACHE.glob("wheelhouse-*"):
            if stale != cached and (stale / ".complete").exists():  # older inputs
                shutil.rmtree(stale, ignore_errors=True)
    return cached


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dependencies (cached) plus this checkout's wheel and a patched newer version."""
    _fail_without_prerequisites()
    out = tmp_path_factory.mktemp("wheelhouse")
    for wheel in _dependency_wheels().glob("*.whl"):
        (out / wheel.name).symlink_to(wheel)
    _build_wheel(REPO, out)
    # The "new release": the same source with another version string.
    source = tmp_path_factory.mktemp("source-new")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "edge_agent", source / "edge_agent", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "edge_agent/__init__.py"):
        path = source / name
        text = path.read_text()
        patched = re.sub(
            r'^(version|__version__) = "0\.1\.0"',
            rf'\1 = "{NEW_VERSION}"',
            text,
            count=1,
            flags=re.MULTILINE,
        )
        assert patched != text, f"no version string to patch in {name}"
        path.write_text(patched)
    _build_wheel(source, out)
    assert (out / f"audience_edge-{OLD_VERSION}-py3-none-any.whl").exists()
    assert (out / f"audience_edge-{NEW_VERSION}-py3-none-any.whl").exists()
    return out


def _yaml(data: object) -> str:
    """YAML is a superset of JSON: inventory files without a YAML writer."""
    return json.dumps(data, indent=2) + "\n"


def _write_inventory(
    directory: Path,
    broker: targets.Target,
    devices: dict[str, targets.Target],
    wheelhouse: Path,
    key: Path,
    passwords: dict[str, str],
    certs: Path,
) -> None:
    """The example inventory's layout, addressed to the booted targets; the broker gets
    a TLS listener and TLS_DEVICE a client certificate (made as `cloud-hub broker` does)."""
    (directory / "group_vars").mkdir(parents=True)
    (directory / "host_vars").mkdir()
    hosts = {
        "all": {
            "children": {
                "brokers": {"hosts": {BROKER: {"ansible_host": broker.address}}},
                "hubs": {"hosts": {}},
                "edge": {"hosts": {n: {"ansible_host": t.address} for n, t in devices.items()}},
            }
        }
    }
    (directory / "hosts.yml").write_text(_yaml(hosts))
    common = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": " ".join(targets.ssh_args(key)[2:]),
        "ansible_python_interpreter": "/usr/bin/python3",
        "fleet_topic_root": TOPIC_ROOT,
        "vault_hub_mqtt_password": passwords["hub"],
        "vault_device_passwords": {n: passwords[n] for n in devices},
    }
    (directory / "group_vars" / "all.yml").write_text(_yaml(common))
    (directory / "group_vars" / "brokers.yml").write_text(
        _yaml(
            {
                "mosquitto_topic_root": "{{ fleet_topic_root }}",
                "mosquitto_hub_password": "{{ vault_hub_mqtt_password }}",
                "mosquitto_tls_ca_pem": (certs / "ca.pem").read_text(),
                "mosquitto_tls_cert_pem": (certs / "server.pem").read_text(),
                "mosquitto_tls_key_pem": (certs / "server.key").read_text(),
            }
        )
    )
    edge = {
        "edge_agent_version": OLD_VERSION,
        "edge_agent_wheelhouse": str(wheelhouse),
        "edge_agent_models_src": str(MODELS),
        "edge_agent_bundle_dir": str(directory.parent / "bundles"),
        "edge_agent_mqtt_host": broker.address,
        "edge_agent_mqtt_topic_root": "{{ fleet_topic_root }}",
        "edge_agent_mqtt_password": "{{ vault_device_passwords[inventory_hostname] }}",
        # A looping clip paced like a live camera, at a rate two shared cores can take.
        "edge_agent_cameras": [
            {"id": "door", "source": f"/srv/video/{CLIP}", "loop": True, "realtime": True, "fps": 2}
        ],
        "edge_agent_settings": {"returns": {"enabled": False}},
        "edge_agent_health_retries": 45,
        "edge_agent_health_delay": 2,
        "edge_agent_memory_max": "1G",
        "edge_agent_cpu_quota": "100%",
    }
    (directory / "group_vars" / "edge.yml").write_text(_yaml(edge))
    for name in devices:
        host: dict[str, object] = {"edge_agent_device_id": f"store1-{name}"}
        if name == TLS_DEVICE:
            host |= {
                "edge_agent_mqtt_port": 8883,
                "edge_agent_mqtt_tls_ca_pem": (certs / "ca.pem").read_text(),
                "edge_agent_mqtt_tls_cert_pem": (certs / f"store1-{name}.pem").read_text(),
                "edge_agent_mqtt_tls_key_pem": (certs / f"store1-{name}.key").read_text(),
            }
        (directory / "host_vars" / f"{name}.yml").write_text(_yaml(host))


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[Fleet]:
    """Boot the broker and the devices (in parallel), write the inventory; power off after."""
    _fail_without_prerequisites()
    base = targets.base_root()
    key = targets.ssh_key()
    workdir = tmp_path_factory.mktemp("fleet")
    targets.setup_bridge()
    booted: list[targets.Target] = []
    try:
        names = [BROKER, *DEVICES]
        for index, name in enumerate(names):
            booted.append(targets.boot(name, index, base, workdir / name, key, VIDEO))
        with concurrent.futures.ThreadPoolExecutor(len(booted)) as pool:
            list(pool.map(targets.wait_ready, booted))
        broker, devices = booted[0], {t.name: t for t in booted[1:]}
        passwords = {name: secrets.token_urlsafe(18) for name in ["hub", *DEVICES]}
        certs = workdir / "certs"
        broker_auth.make_ca(certs)
        broker_auth.issue_cert(certs, certs, "broker", server_names=[broker.address])
        broker_auth.issue_cert(certs, certs, f"store1-{TLS_DEVICE}")
        inventory = workdir / "inventory"
        _write_inventory(inventory, broker, devices, wheelhouse, key, passwords, certs)
        yield Fleet(broker, devices, inventory, workdir, passwords, certs)
    finally:
        with concurrent.futures.ThreadPoolExecutor(max(1, len(booted))) as pool:
            list(pool.map(targets.shutdown, booted))
        targets.teardown_bridge()
        shutil.rmtree(workdir / "bundles", ignore_errors=True)  # 190 MB of tar; logs stay
