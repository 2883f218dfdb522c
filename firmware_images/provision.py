"""First-boot provisioning of an edge device from its boot partition.

The operator writes ``provision.env`` on the FAT boot partition (any laptop can) before
the first boot; ``edge-provision.service`` runs ``provision.py apply`` on every boot:

- it validates the file (syntax, known keys, and the resulting agent configuration with
  the agent's own model), and on error writes ``provision-error.txt`` beside it, logs the
  reason and exits 1 (the agent, which ``Requires=`` this unit, does not start);
- it writes ``/etc/edge-agent/agent.toml`` (no secret: it names the password file in
  ``mqtt.password_file``) and, when the file holds ``MQTT_PASSWORD``,
  ``/etc/edge-agent/mqtt-password`` (root:edge-agent 0640), which the agent reads;
- it then removes the password from ``provision.env``: first overwritten in place (same
  length, so the same FAT clusters: the old bytes do not linger in free space), then the
  line is replaced by a comment. The rest of the file stays for the operator to read;
- run again with the same file it changes nothing (idempotent), and says so.

File format (see docs/firmware.md): ``KEY=value`` lines, ``#`` comments, optional quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from edge_agent.config import AgentConfig

PROVISION_FILE: Final = "provision.env"
ERROR_FILE: Final = "provision-error.txt"
AGENT_FILE: Final = "agent.toml"
PASSWORD_FILE: Final = "mqtt-password"
SECRET_KEY: Final = "MQTT_PASSWORD"
PLACEHOLDER: Final = "paste-the-password-here"  # provision.env.example's value
# Scalar keys: provision.env key -> (section, agent.toml key).
KEYS: Final[dict[str, tuple[str | None, str]]] = {
    "DEVICE_ID": (None, "device_id"),
    "MQTT_HOST": ("mqtt", "host"),
    "MQTT_PORT": ("mqtt", "port"),
    "MQTT_TOPIC_ROOT": ("mqtt", "topic_root"),
    "MQTT_PROTOCOL": ("mqtt", "protocol"),
    "MQTT_USERNAME": ("mqtt", "username"),
    SECRET_KEY: ("mqtt", "password"),
}
REQUIRED: Final = ("DEVICE_ID", "MQTT_HOST")
CAMERA_PREFIX: Final = "CAMERA_"
_LINE: Final = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.-]*)\s*=(.*)$")
_BARE_KEY: Final = re.compile(r"^[A-Za-z0-9_-]+$")


class ProvisionError(Exception):
    """The provisioning file or the device state is not usable; the message says why."""


@dataclass
class Provision:
    """What provision.env asks for."""

    values: dict[str, str]
    cameras: list[tuple[str, str]] = field(default_factory=list)

    @property
    def password(self) -> str | None:
        return self.values.get(SECRET_KEY)


def log(message: str) -> None:
    """One line to the journal (stdout of a oneshot unit)."""
    print(f"edge-provision: {message}", flush=True)


def parse(text: str) -> Provision:
    """Parse provision.env; errors name the line."""
    values: dict[str, str] = {}
    cameras: list[tuple[str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip().lstrip("\ufeff")  # Notepad's byte order mark
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ProvisionError(f"line {number}: expected KEY=value, got {line[:40]!r}")
        key, value = match.group(1), _unquote(match.group(2).strip())
        if key.startswith(CAMERA_PREFIX):
            camera = key[len(CAMERA_PREFIX) :]
            if any(camera == c for c, _ in cameras):
                raise ProvisionError(f"line {number}: camera {camera!r} given twice")
            if not value:
                raise ProvisionError(f"line {number}: {key} needs a source")
            cameras.append((camera, value))
            continue
        if key not in KEYS:
            known = ", ".join([*KEYS, CAMERA_PREFIX + "<id>"])
            raise ProvisionError(f"line {number}: unknown key {key!r} (known: {known})")
        if key in values:
            raise ProvisionError(f"line {number}: {key} given twice")
        values[key] = value
    for key in REQUIRED:
        if not values.get(key):
            raise ProvisionError(f"{key} is required")
    return Provision(values, cameras)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def agent_settings(
    default: Mapping[str, Any], provision: Provision, password_file: Path
) -> dict[str, Any]:
    """The image's default configuration with what provision.env sets; the password
    itself stays out: ``mqtt.password_file`` names where the agent reads it."""
    data: dict[str, Any] = json.loads(json.dumps(default))  # a deep copy of plain TOML
    for key, (section, name) in KEYS.items():
        if key == SECRET_KEY or key not in provision.values:
            continue
        value: Any = provision.values[key]
        if key == "MQTT_PORT":
            try:
                value = int(value)
            except ValueError:
                raise ProvisionError(f"MQTT_PORT must be a number, not {value!r}") from None
        target = data if section is None else data.setdefault(section, {})
        target[name] = value
    mqtt = data.setdefault("mqtt", {})
    mqtt.setdefault("username", provision.values["DEVICE_ID"])  # the ACL expects the id
    mqtt.pop("password", None)
    mqtt["password_file"] = str(password_file)
    if provision.cameras:
        data["cameras"] = [{"id": c, "source": s} for c, s in provision.cameras]
    return data


def validate(settings: Mapping[str, Any]) -> None:
    """Check the configuration with the agent's own model."""
    try:
        AgentConfig.model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ProvisionError(f"the configuration would be invalid: {problems}") from None


def dump_toml(data: Mapping[str, Any], prefix: Sequence[str] = ()) -> str:
    """TOML for plain data (the stdlib reads TOML but cannot write it)."""
    scalars, tables, arrays = [], [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            scalars.append(f"{_key(key)} = {_value(value)}\n")
    out = "".join(scalars)
    for key, table in tables:
        path = [*prefix, key]
        out += f"\n[{'.'.join(_key(k) for k in path)}]\n" + dump_toml(table, path).lstrip("\n")
    for key, items in arrays:
        path = [*prefix, key]
        for item in items:
            out += f"\n[[{'.'.join(_key(k) for k in path)}]]\n" + dump_toml(item, path)
    return out


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's string escapes are all valid TOML escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise ProvisionError(f"cannot write {type(value).__name__} to TOML")


def _write(path: Path, text: str, mode: int, owner: str | None, group: str | None) -> bool:
    """Write atomically with mode and owner; False (and no write) when already so."""
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fchmod(fd, mode)
        if owner is not None or group is not None:
            uid = pwd.getpwnam(owner).pw_uid if owner else -1
            gid = pwd.getpwnam(group).pw_gid if group else -1
            os.fchown(fd, uid, gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    _fsync_dir(path.parent)
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def scrub_secret(path: Path, when: datetime) -> None:
    """Remove MQTT_PASSWORD's value from the file on the FAT partition.

    First the value is overwritten with as many 'x' in place (same size: the same
    clusters, so the secret does not survive in the partition's free space), then the
    line becomes a comment. The rest of the file is left as the operator wrote it.
    """
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    blanked, final = [], []
    for line in lines:
        match = _LINE.match(line.decode("utf-8", "replace").strip().lstrip("\ufeff"))
        if match is None or match.group(1) != SECRET_KEY:
            blanked.append(line)
            final.append(line)
            continue
        body_end = len(line.rstrip(b"\r\n"))
        key_end = line.index(b"=") + 1
        blanked.append(line[:key_end] + b"x" * (body_end - key_end) + line[body_end:])
        note = (
            f"# {SECRET_KEY} removed by edge-provision on {when:%Y-%m-%d %H:%M} UTC; "
            f"the device keeps it in /etc/edge-agent/{PASSWORD_FILE}"
        )
        final.append(note.encode() + (line[body_end:] or b"\n"))
    for content in (b"".join(blanked), b"".join(final)):
        with path.open("r+b") as handle:  # in place: no new clusters, no rename
            handle.write(content)
            handle.truncate(len(content))
            handle.flush()
            os.fsync(handle.fileno())
    _fsync_dir(path.parent)


def apply(boot_dir: Path, etc_dir: Path, default_config: Path, owner: str | None) -> int:
    """Provision from boot_dir/provision.env into etc_dir; 0 on success, 1 on error."""
    source = boot_dir / PROVISION_FILE
    error_file = boot_dir / ERROR_FILE
    try:
        changed = _apply(source, etc_dir, default_config, owner)
    except ProvisionError as exc:
        log(f"error: {source}: {exc}")
        try:
            error_file.write_text(
                f"edge-provision could not use {PROVISION_FILE}: {exc}\n"
                "Fix the file and boot again (see provision.env.example).\n"
            )
        except OSError as write_error:
            log(f"cannot write {error_file}: {write_error}")
        return 1
    if error_file.exists():
        error_file.unlink()
        log(f"removed the old {ERROR_FILE}")
    log("done" if changed else "nothing to change")
    return 0


def _apply(source: Path, etc_dir: Path, default_config: Path, owner: str | None) -> bool:
    agent_file, password_file = etc_dir / AGENT_FILE, etc_dir / PASSWORD_FILE
    if not source.exists():
        if agent_file.exists():
            log(f"no {source}: keeping {agent_file}")
            return False
        # Never provisioned: the agent runs the image's defaults (the demo clip).
        etc_dir.mkdir(parents=True, exist_ok=True)
        _write(agent_file, default_config.read_text(), 0o640, None, owner)
        log(f"no {source} and never provisioned: wrote {agent_file} from the image's defaults")
        return True
    try:
        provision = parse(source.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ProvisionError("not UTF-8 text") from None
    default = tomllib.loads(default_config.read_text())
    settings = agent_settings(default, provision, password_file)
    if provision.password == PLACEHOLDER:
        raise ProvisionError(f"{SECRET_KEY} is still the example's placeholder")
    if not provision.password and not password_file.exists():
        raise ProvisionError(f"{SECRET_KEY} is required: this device has no password yet")
    validate(settings)
    etc_dir.mkdir(parents=True, exist_ok=True)
    changed = False
    header = (
        "# Written by edge-provision from provision.env on the boot partition and the\n"
        "# image's agent.default.toml; edit provision.env and reboot rather than this file.\n"
    )
    # root:edge-agent 0640, like agent.toml and the TLS key: the agent reads its secret
    # but cannot change it.
    secret = (provision.password or "") + "\n"
    if provision.password and _write(password_file, secret, 0o640, None, owner):
        log(f"wrote {password_file} (0640) for user {settings['mqtt']['username']}")
        changed = True
    if _write(agent_file, header + dump_toml(settings), 0o640, None, owner):
        log(
            f"wrote {agent_file}: device {settings['device_id']}, broker "
            f"{settings['mqtt']['host']}:{settings['mqtt'].get('port', 1883)}, "
            f"{len(settings.get('cameras', []))} camera(s)"
        )
        changed = True
    if provision.password:
        scrub_secret(source, datetime.now(UTC))
        log(f"removed {SECRET_KEY} from {source}")
        changed = True
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-provision", description=__doc__.split("\n")[0])
    parser.add_argument("--boot-dir", type=Path, default=Path("/boot/firmware"))
    parser.add_argument("--etc-dir", type=Path, default=Path("/etc/edge-agent"))
    parser.add_argument(
        "--default-config", type=Path, default=Path("/etc/edge-agent/agent.default.toml")
    )
    parser.add_argument(
        "--owner", default="edge-agent", help="the agent's user ('' keeps the caller's)"
    )
    parser.add_argument("command", choices=["apply"])
    args = parser.parse_args(argv)
    return apply(args.boot_dir, args.etc_dir, args.default_config, args.owner or None)


if __name__ == "__main__":
    sys.exit(main())
