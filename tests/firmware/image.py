"""Helpers for the device image: find its boot partition, read and write it with mtools
(no loop mount), and boot it under qemu with UEFI firmware (OVMF)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.paths import REPO

IMAGE_DIR = REPO / "build" / "firmware"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPES = {  # the Discoverable Partitions root types build.sh uses
    "amd64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "arm64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
}
# UEFI firmware per architecture (Debian's ovmf and qemu-efi-aarch64): code, variables.
FIRMWARE = {
    "amd64": (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")),
    "arm64": (Path("/usr/share/AAVMF/AAVMF_CODE.fd"), Path("/usr/share/AAVMF/AAVMF_VARS.fd")),
}


def partition(image: Path, type_guid: str = ESP_TYPE) -> tuple[int, int]:
    """(offset, size) in bytes of the first partition of this type (sfdisk's JSON)."""
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(image)], check=True, capture_output=True, text=True
        ).stdout
    )["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    for part in table["partitions"]:
        if part["type"].upper() == type_guid:
            return int(part["start"]) * sector, int(part["size"]) * sector
    raise AssertionError(f"{image} has no partition of type {type_guid}")


def ext4_bytes(image: Path, offset: int) -> int:
    """The size of the ext4 file system at offset, from its superblock."""
    with image.open("rb") as handle:
        handle.seek(offset + 1024)
        superblock = handle.read(1024)
    assert superblock[0x38:0x3A] == b"\x53\xef", "no ext4 superblock there"

    def u32(at: int) -> int:
        return int(struct.unpack_from("<I", superblock, at)[0])

    blocks = u32(4)  # s_blocks_count_lo
    if u32(0x60) & 0x80:  # INCOMPAT_64BIT: the high half too
        blocks |= u32(0x150) << 32
    return blocks * (1024 << u32(24))  # s_log_block_size


def _fat(image: Path) -> str:
    return f"{image}@@{partition(image)[0]}"


def fat_write(image: Path, name: str, text: str) -> None:
    """Put a file on the image's boot partition."""
    local = image.with_name(f".{name}.upload")
    local.write_text(text)
    try:
        subprocess.run(["mcopy", "-o", "-i", _fat(image), str(local), f"::{name}"], check=True)
    finally:
        local.unlink()


def fat_read(image: Path, name: str) -> str | None:
    """A file of the boot partition, or None when it is not there."""
    listing = subprocess.run(
        ["mdir", "-b", "-i", _fat(image), "::/"], capture_output=True, text=True, check=True
    ).stdout
    if not any(line.rstrip("/").lower().endswith("/" + name.lower()) for line in listing.split()):
        return None
    # Bytes, not text=True: universal newlines would hide the file's CRLF line ends.
    return subprocess.run(
        ["mtype", "-i", _fat(image), f"::{name}"], capture_output=True, check=True
    ).stdout.decode()


def fat_bytes(image: Path) -> bytes:
    """The boot partition's raw bytes, free space included."""
    offset, size = partition(image)
    with image.open("rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def accelerator() -> str:
    """kvm when /dev/kvm works, else tcg (EDGE_IMAGE_ACCEL=tcg|kvm forces one).

    /dev/kvm may exist and still fail (nested virtualisation that rejects the CPU's MSRs
    aborts qemu at once), so a paused guest is started as a probe: alive after 2 s, kvm.
    """
    wanted = os.environ.get("EDGE_IMAGE_ACCEL", "")
    if wanted:
        return wanted
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    probe = ["qemu-system-x86_64", "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "64"]
    probe += ["-nodefaults", "-display", "none", "-S"]
    try:
        subprocess.run(probe, capture_output=True, timeout=2)
    except subprocess.TimeoutExpired:
        return "kvm"
    return "tcg"


@dataclass
class Guest:
    """A qemu process booting one image; the serial console goes to ``serial``."""

    process: subprocess.Popen[bytes]
    serial: Path
    qmp: Path
    accel: str

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def _qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.qmp))
            reader = sock.makefile("rb")
            reader.readline()  # the greeting
            for execute in ("qmp_capabilities", command):
                sock.sendall(json.dumps({"execute": execute}).encode() + b"\n")
                while b'"return"' not in (line := reader.readline()):
                    if not line:
                        return
                    if b'"error"' in line:
                        raise AssertionError(f"qmp {execute}: {line!r}")

    def shutdown(self, timeout_s: float = 180.0) -> bool:
        """ACPI power button, then wait; kill if it does not stop. True if it shut down."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self._qmp("system_powerdown")
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return False
        return True


def boot(image: Path, work: Path, arch: str = "amd64", memory_mib: int = 2048) -> Guest:
    """Start qemu on a raw image with UEFI firmware, user-mode networking (the host is
    10.0.2.2 to the guest) and the serial console in a file. amd64 runs on KVM when it
    works; arm64 on an amd64 host is always TCG."""
    code, variables = FIRMWARE[arch]
    vars_copy = work / variables.name
    shutil.copyfile(variables, vars_copy)
    serial, qmp = work / "serial.log", work / "qmp.sock"
    if arch == "amd64":
        accel = accelerator()
        machine = ["qemu-system-x86_64", "-machine", f"q35,accel={accel}"]
        machine += ["-cpu", "host" if accel == "kvm" else "max"]
    else:
        accel = "tcg"
        machine = ["qemu-system-aarch64", "-machine", "virt", "-cpu", "max"]
    cmd: list[str] = [
        *machine,
        "-m", str(memory_mib),
        "-smp", "2",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        "-drive", f"file={image},format=raw,if=none,id=disk0,cache=unsafe",
        "-device", "virtio-blk-pci,drive=disk0",
        "-netdev", "user,id=net0",
        "-device", "virtio-net-pci,netdev=net0",
        "-display", "none",
        "-serial", f"file:{serial}",
        "-qmp", f"unix:{qmp},server=on,wait=off",
        "-no-reboot",
    ]  # fmt: skip
    log = (work / "qemu.log").open("wb")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not qmp.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if process.poll() is not None:
        raise AssertionError(f"qemu exited: {(work / 'qemu.log').read_text(errors='replace')}")
    return Guest(process, serial, qmp, accel)


def layout(image: Path) -> dict[str, Any]:
    """build.sh's KEY=value notes beside the image (offsets, architecture)."""
    notes = image.with_name(image.name + ".layout")
    return dict(line.split("=", 1) for line in notes.read_text().split())
