"""Boot the built amd64 device image under qemu and see its agent come online.

A copy of ``build/firmware/edge-amd64.img`` gets a ``provision.env`` on its boot
partition naming a private Mosquitto (the shipped configuration, a device user made by
the same code as ``cloud-hub device add``) at 10.0.2.2, the host as qemu's user-mode
network shows it. The agent's retained ``online`` status proves that first-boot
provisioning wrote a configuration the agent runs and that the password from the boot
partition was accepted by a broker that allows no anonymous client; after the shutdown
the boot partition is read back: the password is gone from the file and from its free
space. Run with ``make image-test`` (minutes under software emulation).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_hub.security import broker_auth as ba
from tests.conftest import free_port
from tests.firmware.image import (
    IMAGE_DIR,
    ROOT_TYPES,
    boot,
    ext4_bytes,
    fat_bytes,
    fat_read,
    fat_write,
    partition,
)

pytestmark = pytest.mark.image

ONLINE_TIMEOUT_S = float(os.environ.get("EDGE_IMAGE_TIMEOUT_S", "1500"))
DEVICE = "qemu-door-1"
GROW = 1 << 30


@dataclass
class Broker:
    port: int
    topic_root: str
    hub_password: str
    device_password: str
    log: Path


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """Mosquitto from deploy/mosquitto: no anonymous clients, a hub and one device."""
    directory = tmp_path / "broker"
    port = free_port()
    main = ba.render_broker_config(
        directory, port=port, bind="127.0.0.1", run_as="root" if os.geteuid() == 0 else None
    )
    root = f"img-{uuid.uuid4().hex[:8]}"
    ba.ensure_acl(directory / "acl", root, "hub")
    hub, device = ba.new_password(), ba.new_password()
    ba.set_password(directory / "passwd", "hub", hub)
    ba.set_password(directory / "passwd", DEVICE, device)
    log = directory / "broker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["mosquitto", "-c", str(main)], stdout=out, stderr=out)
    try:
        yield Broker(port, root, hub, device, log)
    finally:
        process.terminate()
        process.wait(10)


def _subscribe_status(broker: Broker) -> tuple[mqtt.Client, list[dict[str, object]]]:
    """The hub's view of the device's status topic: live (not retained) messages only,
    so each boot's ``online`` is counted once."""
    seen: list[dict[str, object]] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set("hub", broker.hub_password)
    topic = f"{broker.topic_root}/v1/{DEVICE}/status"
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if not msg.retain:
            seen.append(json.loads(msg.payload))

    client.on_message = on_message
    deadline = time.monotonic() + 10
    while True:
        try:
            client.connect("127.0.0.1", broker.port)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, broker.log.read_text()
            time.sleep(0.1)
    client.loop_start()
    return client, seen


def _boot_until_online(
    image: Path, arch: str, work: Path, seen: list[dict[str, object]], count: int
) -> tuple[float, str]:
    """Boot (the ``count``-th time), wait for an online status published during this
    boot, shut down cleanly; return the seconds from qemu's start to it and the console."""
    work.mkdir()
    before = len(seen)  # the agent republishes its status on every camera change
    started = time.monotonic()
    guest = boot(image, work, arch)
    online_s: float | None = None
    try:
        while time.monotonic() - started < ONLINE_TIMEOUT_S and guest.process.poll() is None:
            if any(s.get("state") == "online" for s in seen[before:]):
                online_s = time.monotonic() - started
                break
            time.sleep(0.5)
        # A clean shutdown, so the boot partition is read back as the device left it.
        shut_down = guest.shutdown()
    finally:
        if guest.process.poll() is None:
            guest.process.kill()
        if guest.serial.exists():  # kept for a look after the test: the whole boot log
            shutil.copyfile(guest.serial, IMAGE_DIR / f"last-boot-{arch}-serial-{count}.log")
    console = guest.console()
    assert online_s is not None, (
        f"boot {count}: no online status within {ONLINE_TIMEOUT_S:.0f} s ({guest.accel}); "
        "console tail:\n" + console[-6000:]
    )
    assert shut_down, "the guest did not power off on the ACPI button"
    print(f"\nimage: {arch} boot {count}: online {online_s:.1f} s after qemu start ({guest.accel})")
    return online_s, console


@pytest.mark.timeout(2 * ONLINE_TIMEOUT_S + 600)
# The architectures to boot: amd64 (what `make image-test` builds) unless
# EDGE_IMAGE_ARCHES says otherwise, e.g. "amd64 arm64" after `make image IMAGE_ARCH=arm64`.
@pytest.mark.parametrize("arch", os.environ.get("EDGE_IMAGE_ARCHES", "amd64").split())
def test_image_boots_provisions_and_publishes_online(
    arch: str, tmp_path: Path, broker: Broker
) -> None:
    built = IMAGE_DIR / f"edge-{arch}.img"
    if arch == "amd64":
        built = Path(os.environ.get("EDGE_IMAGE", built))
    if not built.exists():
        pytest.fail(f"{built} is missing: build it with `make image IMAGE_ARCH={arch}`")
    image = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(built), str(image)], check=True)
    _, root_before = partition(image, ROOT_TYPES[arch])
    with image.open("r+b") as handle:  # a card 1 GiB larger than the image
        handle.truncate(image.stat().st_size + GROW)
    fat_write(
        image,
        "provision.env",
        "# written by tests/firmware/test_image_boot.py\r\n"  # as a Windows editor would
        f"DEVICE_ID={DEVICE}\r\n"
        "MQTT_HOST=10.0.2.2\r\n"
        f"MQTT_PORT={broker.port}\r\n"
        f"MQTT_TOPIC_ROOT={broker.topic_root}\r\n"
        f"MQTT_PASSWORD={broker.device_password}\r\n",
    )
    client, seen = _subscribe_status(broker)
    try:
        _, console = _boot_until_online(image, arch, tmp_path / "boot1", seen, 1)
        status = next(s for s in seen if s.get("state") == "online")
        assert status["device_id"] == DEVICE
        assert "edge-provision: removed MQTT_PASSWORD" in console, console[-6000:]

        # The boot partition after the shutdown: the password is out of the file and out
        # of the partition's free space; the rest of what the operator wrote is there.
        provision = fat_read(image, "provision.env")
        assert provision is not None
        assert broker.device_password not in provision
        assert f"DEVICE_ID={DEVICE}\r\n" in provision
        assert "# MQTT_PASSWORD removed by edge-provision" in provision
        assert fat_read(image, "provision-error.txt") is None
        assert broker.device_password.encode() not in fat_bytes(image)
        # First boot grew the root partition and its file system into the free space.
        root_offset, root_after = partition(image, ROOT_TYPES[arch])
        assert root_after >= root_before + GROW - 2**20, (root_before, root_after)
        assert ext4_bytes(image, root_offset) >= root_after - 2**20

        # Second boot: provisioning finds nothing to do, the stored credentials connect.
        _, console = _boot_until_online(image, arch, tmp_path / "boot2", seen, 2)
        assert "edge-provision: nothing to change" in console, console[-6000:]
        assert fat_read(image, "provision.env") == provision
    finally:
        client.disconnect()
        client.loop_stop()
