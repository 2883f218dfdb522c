"""First-boot provisioning (firmware_images/provision.py) against a temporary boot
partition directory and /etc, as edge-provision.service runs it on the device."""

from __future__ import annotations

import os
import pwd
import stat
import tomllib
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from firmware_images import provision
from tests.paths import REPO

DEFAULT = REPO / "firmware_images" / "rootfs" / "etc" / "edge-agent" / "agent.default.toml"
SECRET = "Zx9#secret'\"pw"
GOOD = f"""# provisioning for the door camera
DEVICE_ID=store-12-door
MQTT_HOST=broker.example.net
MQTT_PORT=8883
MQTT_PASSWORD='{SECRET}'
CAMERA_entrance=rtsp://10.0.0.21/stream1
CAMERA_till="0"
"""


class Device:
    """A boot directory and an /etc/edge-agent in tmp_path."""

    def __init__(self, root: Path) -> None:
        self.boot = root / "boot"
        self.etc = root / "etc" / "edge-agent"
        self.boot.mkdir()

    @property
    def env(self) -> Path:
        return self.boot / "provision.env"

    @property
    def error(self) -> Path:
        return self.boot / "provision-error.txt"

    def apply(self) -> int:
        return provision.apply(self.boot, self.etc, DEFAULT, owner=None)

    @property
    def password_file(self) -> Path:
        return self.etc / "mqtt-password"

    def config(self) -> AgentConfig:
        """What the agent's unit runs: ``edge-agent run --config /etc/edge-agent/agent.toml``."""
        return AgentConfig.load(self.etc / "agent.toml")


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path)


def test_first_boot_writes_config_and_credentials_and_scrubs_the_secret(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    device.env.write_text(GOOD)
    assert device.apply() == 0
    agent = (device.etc / "agent.toml").read_text()
    assert SECRET not in agent
    assert "password" not in {**tomllib.loads(agent)["mqtt"]}  # only password_file
    assert stat.S_IMODE((device.etc / "agent.toml").stat().st_mode) == 0o640
    assert stat.S_IMODE(device.password_file.stat().st_mode) == 0o640
    assert device.password_file.read_text() == SECRET + "\n"
    left = device.env.read_text()
    assert SECRET not in left
    assert "# MQTT_PASSWORD removed by edge-provision" in left
    assert "DEVICE_ID=store-12-door\nMQTT_HOST=broker.example.net\n" in left  # rest kept
    assert "CAMERA_entrance=rtsp://10.0.0.21/stream1" in left
    out = capsys.readouterr().out
    assert "wrote" in out and "removed MQTT_PASSWORD" in out

    config = device.config()
    assert config.device_id == "store-12-door"
    assert (config.mqtt.host, config.mqtt.port) == ("broker.example.net", 8883)
    assert config.mqtt.password_file == device.password_file
    assert (config.mqtt.username, config.mqtt.resolved_password()) == ("store-12-door", SECRET)
    assert [(c.id, c.source) for c in config.cameras] == [
        ("entrance", "rtsp://10.0.0.21/stream1"),
        ("till", "0"),
    ]


def test_a_second_boot_changes_nothing(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    device.env.write_text(GOOD)
    assert device.apply() == 0
    files = [device.etc / "agent.toml", device.password_file, device.env]
    before = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}
    capsys.readouterr()
    assert device.apply() == 0
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before
    assert "nothing to change" in capsys.readouterr().out


def test_later_edits_apply_and_a_new_password_rotates(device: Device) -> None:
    device.env.write_text(GOOD)
    assert device.apply() == 0
    # The operator points the device at another broker: the stored password is kept.
    device.env.write_text(device.env.read_text().replace("broker.example.net", "10.1.2.3"))
    assert device.apply() == 0
    config = device.config()
    assert (config.mqtt.host, config.mqtt.resolved_password()) == ("10.1.2.3", SECRET)
    # `cloud-hub device rotate` gave a new password: it replaces the old one.
    with device.env.open("a") as handle:
        handle.write("MQTT_PASSWORD=rotated-pw\n")
    assert device.apply() == 0
    assert device.config().mqtt.resolved_password() == "rotated-pw"
    assert "rotated-pw" not in device.env.read_text()


def test_windows_line_endings_and_bom(device: Device) -> None:
    device.env.write_bytes(("\ufeff" + GOOD).replace("\n", "\r\n").encode())
    assert device.apply() == 0
    raw = device.env.read_bytes()
    assert SECRET.encode() not in raw
    assert raw.count(b"\r\n") == GOOD.count("\n")  # every line keeps its ending


def test_no_file_runs_the_image_default_until_one_comes(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    assert device.apply() == 0
    config = device.config()
    assert config.device_id == "edge-unprovisioned"
    assert config.cameras[0].loop and config.cameras[0].realtime
    assert "never provisioned" in capsys.readouterr().out
    assert device.apply() == 0  # the next boot without a file keeps it
    assert "keeping" in capsys.readouterr().out
    device.env.write_text(GOOD)
    assert device.apply() == 0
    assert device.config().device_id == "store-12-door"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DEVICE_ID=a\nMQTT_HOST=h\nMQTT_PASSWORD=p\nFOO=1\n", "line 4: unknown key 'FOO'"),
        ("MQTT_HOST=h\nMQTT_PASSWORD=p\n", "DEVICE_ID is required"),
        ("DEVICE_ID=a\nMQTT_HOST=h\n", "MQTT_PASSWORD is required"),
        ("DEVICE_ID=a/b\nMQTT_HOST=h\nMQTT_PASSWORD=p\n", "device_id: String should match"),
        ("DEVICE_ID=a\nMQTT_HOST=h\nMQTT_PORT=x\nMQTT_PASSWORD=p\n", "MQTT_PORT must be a number"),
        ("DEVICE_ID=a\nMQTT_HOST=h\nMQTT_PORT=70000\nMQTT_PASSWORD=p\n", "mqtt.port"),
        ("DEVICE_ID=a\nMQTT_HOST=h\nMQTT_PROTOCOL=4\nMQTT_PASSWORD=p\n", "mqtt.protocol"),
        ("DEVICE_ID=a\nDEVICE_ID=b\nMQTT_HOST=h\nMQTT_PASSWORD=p\n", "DEVICE_ID given twice"),
        ("DEVICE_ID=a\nMQTT_HOST=h\nMQTT_PASSWORD=p\njust words\n", "line 4: expected KEY=value"),
        ("DEVICE_ID=a\nMQTT_HOST=h\nMQTT_PASSWORD=p\nCAMERA_x=\n", "CAMERA_x needs a source"),
        ("DEVICE_ID=a\nMQTT_HOST=h\nMQTT_PASSWORD=paste-the-password-here\n", "placeholder"),
    ],
)
def test_a_bad_file_fails_clearly_and_changes_nothing(
    device: Device, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    device.env.write_text(text)
    assert device.apply() == 1
    assert message in device.error.read_text()
    assert message in capsys.readouterr().out
    assert not device.etc.exists() or not device.password_file.exists()
    assert device.env.read_text() == text  # the password stays until it has been stored
    # Fixed file, next boot: provisioned, and the error note is gone.
    device.env.write_text(GOOD)
    assert device.apply() == 0
    assert not device.error.exists()


def test_not_utf8_is_an_error(device: Device) -> None:
    device.env.write_bytes(b"DEVICE_ID=\xff\n")
    assert device.apply() == 1
    assert "not UTF-8" in device.error.read_text()


def test_owner_is_applied(device: Device) -> None:
    user = pwd.getpwuid(os.getuid()).pw_name
    device.env.write_text(GOOD)
    assert provision.apply(device.boot, device.etc, DEFAULT, owner=user) == 0
    for path in (device.password_file, device.etc / "agent.toml"):  # root:agent's group
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), pwd.getpwnam(user).pw_gid)


def test_dump_toml_round_trips_every_config_shape() -> None:
    data = {
        "device_id": "d",
        "mqtt": {"host": "h", "port": 1, "tls": False, "password": 'q"\\\n\t\u00e9'},
        "detector": {"score_threshold": 0.6},
        "cameras": [
            {"id": "a", "source": "0", "line": [[0.0, 0.5], [1.0, 0.5]], "loop": True},
            {"id": "b", "source": "x", "roi": [0.1, 0.2, 0.9, 1.0]},
        ],
        "odd key": "v",
    }
    assert tomllib.loads(provision.dump_toml(data)) == data
    AgentConfig.model_validate({k: v for k, v in data.items() if k != "odd key"})
