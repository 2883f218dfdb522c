"""Real Debian targets for the Ansible tests: booted containers on their own network.

Each target is a Debian bookworm root made once with ``debootstrap`` (cached under
``~/.cache/audience-edge/fleet``, keyed by a hash of the recipe below), mounted per test
session as an overlay (the cached root stays untouched), and booted with
``systemd-nspawn -b``: real systemd is PID 1 inside, so the roles' units really start,
restart and get their cgroup limits. Every target lives in its own network namespace,
joined to a host bridge by a veth pair, and runs its own sshd: Ansible reaches it over
SSH exactly as it reaches a device in the field, and ``127.0.0.1:9108`` on a target is
that target's agent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("AUDIENCE_EDGE_CACHE", Path.home() / ".cache" / "audience-edge"))
FLEET_CACHE = CACHE / "fleet"
SUITE = "bookworm"
MIRROR = os.environ.get("FLEET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a device (or the broker host) has before Ansible runs: the firmware's base.
PACKAGES = [
    "python3",
    "python3-venv",
    "python3-apt",
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "procps",
    "ca-certificates",
    "openssh-server",
    "mosquitto",
    "sudo",
]
RECIPE_VERSION = 1  # bump when the steps in build_base_root change

# Names and addresses per test session, so two sessions on one machine (make test in two
# checkouts) never share a bridge, a namespace or a subnet: 10.199.<tag>.0/24.
TAG = os.getpid() % 250 + 1
BRIDGE = f"flbr{TAG}"
SUBNET = f"10.199.{TAG}"
HOST_ADDRESS = f"{SUBNET}.1"
TOOLS = ["debootstrap", "systemd-nspawn", "ip", "ssh", "ssh-keygen", "mount"]


def missing_tools() -> list[str]:
    """Host commands the targets need; .ci/fleet-tools.sh installs them."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [tool for tool in TOOLS if shutil.which(tool, path=path) is None]


def _run(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, text=True, capture_output=True, **kw)  # type: ignore[call-overload, no-any-return]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per cache entry (parallel sessions wait, then reuse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def base_root() -> Path:
    """The cached debootstrap root; built on first use (about a minute from the mirror)."""
    recipe = json.dumps([RECIPE_VERSION, SUITE, MIRROR, PACKAGES]).encode()
    key = hashlib.sha256(recipe).hexdigest()[:12]
    root = FLEET_CACHE / f"root-{SUITE}-{key}"
    with _locked(FLEET_CACHE / f"root-{key}.lock"):
        if (root / ".complete").exists():
            return root
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        result = _run(
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(tmp),
            MIRROR,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{result.stdout[-3000:]}{result.stderr}")
        # The broker runs only where the mosquitto role enables it.
        wants = tmp / "etc/systemd/system/multi-user.target.wants/mosquitto.service"
        wants.unlink(missing_ok=True)
        # Keep apt from reaching out on a booted target (no timers, no network at boot).
        for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
            (tmp / "etc/systemd/system/timers.target.wants" / timer).unlink(missing_ok=True)
        (tmp / "etc/apt/apt.conf.d/99no-recommends").write_text(
            'APT::Install-Recommends "false";\n'
        )
        shutil.rmtree(tmp / "var/cache/apt/archives", ignore_errors=True)
        (tmp / "var/cache/apt/archives/partial").mkdir(parents=True)
        (tmp / ".complete").write_text(recipe.decode())
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    for stale in FLEET_CACHE.glob(f"root-{SUITE}-*"):
        if stale != root and (stale / ".complete").exists():  # an older recipe's root
            shutil.rmtree(stale, ignore_errors=True)
    return root


def ssh_key() -> Path:
    """The controller's key for the targets (test only; cached beside the roots)."""
    key = FLEET_CACHE / "id_ed25519"
    with _locked(FLEET_CACHE / "key.lock"):
        if not key.exists():
            FLEET_CACHE.mkdir(parents=True, exist_ok=True)
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-tests", "-f", str(key))
    return key


def ssh_args(key: Path) -> list[str]:
    """Options for reaching a throwaway target (fresh host keys every session)."""
    return [
        "-i",
        str(key),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=5",
    ]


@dataclass
class Target:
    """One booted container: its name, address, merged root on the host, and nspawn."""

    name: str
    address: str
    root: Path
    workdir: Path
    key: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def netns(self) -> str:
        return f"fl{TAG}-{self.name}"

    def ssh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the target as root."""
        return _run(
            "ssh", *ssh_args(self.key), f"root@{self.address}", command, check=check, timeout=60
        )

    def path(self, inside: str) -> Path:
        """A path inside the target, seen from the host (through the overlay)."""
        return self.root / inside.lstrip("/")

    def log(self) -> str:
        return (self.workdir / "nspawn.log").read_text(errors="replace")


def setup_bridge() -> None:
    """The host side of the fleet network (recreated each session)."""
    _run("ip", "link", "del", BRIDGE, check=False)
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")


def teardown_bridge() -> None:
    _run("ip", "link", "del", BRIDGE, check=False)


def boot(name: str, index: int, base: Path, workdir: Path, key: Path, video: Path) -> Target:
    """Overlay the base root, give it a network namespace and boot it with systemd."""
    workdir.mkdir(parents=True, exist_ok=True)
    upper, work, merged = workdir / "upper", workdir / "work", workdir / "root"
    for d in (upper, work, merged):
        d.mkdir(exist_ok=True)
    target = Target(name, f"{SUBNET}.{10 + index}", merged, workdir, key)
    _run(
        "mount",
        "-t",
        "overlay",
        "overlay",
        "-o",
        f"lowerdir={base},upperdir={upper},workdir={work}",
        str(merged),
    )
    ssh_dir = merged / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    (merged / "etc/hostname").write_text(f"{name}\n")
    # sudo looks its host name up: without this line every become waits for DNS.
    (merged / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
    ns, veth = target.netns, f"flv{TAG}x{index}"
    _run("ip", "netns", "del", ns, check=False)
    _run("ip", "link", "del", veth, check=False)
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
    _run("ip", "link", "set", veth, "master", BRIDGE, "up")
    _run("ip", "link", "set", f"{veth}p", "netns", ns)
    inns = ("ip", "netns", "exec", ns, "ip")
    _run(*inns, "link", "set", f"{veth}p", "name", "eth0")
    _run(*inns, "addr", "add", f"{target.address}/24", "dev", "eth0")
    _run(*inns, "link", "set", "eth0", "up")
    _run(*inns, "link", "set", "lo", "up")
    _run(*inns, "route", "add", "default", "via", HOST_ADDRESS)
    log = (workdir / "nspawn.log").open("wb")
    target.process = subprocess.Popen(
        [
            "systemd-nspawn",
            "--quiet",
            "-D",
            str(merged),
            "-b",
            "--register=no",
            "--keep-unit",
            f"--machine={name}",
            f"--network-namespace-path=/run/netns/{ns}",
            f"--bind-ro={video}:/srv/video",
            "--console=passive",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return target


def wait_ready(target: Target, timeout_s: float = 120.0) -> None:
    """Until sshd answers and systemd has finished booting."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert target.process is not None
        if target.process.poll() is not None:
            raise AssertionError(f"{target.name} did not boot:\n{target.log()[-3000:]}")
        done = target.ssh("systemctl is-system-running --wait", check=False)
        if done.stdout.strip() in ("running", "degraded"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{target.name} not ready after {timeout_s}s: {done.stdout}{done.stderr}"
                f"\n{target.log()[-3000:]}"
            )
        time.sleep(1)


def shutdown(target: Target) -> None:
    """Power the container off (nspawn turns SIGTERM into a clean halt), then clean up."""
    if target.process is not None and target.process.poll() is None:
        os.killpg(target.process.pid, signal.SIGTERM)
        try:
            target.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(target.process.pid, signal.SIGKILL)
            target.process.wait(10)
    _run("umount", "-l", str(target.root), check=False)
    _run("ip", "netns", "del", target.netns, check=False)
    # The target's writes (releases, venvs: about 400 MB each); nspawn.log stays.
    for layer in ("upper", "work"):
        shutil.rmtree(target.workdir / layer, ignore_errors=True)
