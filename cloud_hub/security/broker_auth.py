"""Broker-side credentials: Mosquitto password and ACL files, and X.509 certificates.

What ``cloud-hub device ...`` and ``cloud-hub broker ...`` do (docs/security.md):

* **Passwords.** One Mosquitto user per device, named after the device id; the hub has
  its own user. Passwords are 256-bit random strings (``secrets``). The password file is
  written here, in Mosquitto 2's own PBKDF2-SHA512 format (``$7$``), rather than by
  running ``mosquitto_passwd -b``: that command takes the password on its command line,
  where any local user can read it from ``/proc``, and it is not installed where the
  fleet is administered without a broker. The broker accepting these hashes is what
  ``tests/security/test_broker.py`` checks, and ``verify_password`` reads hashes that
  ``mosquitto_passwd`` wrote.
* **ACL.** ``pattern`` lines with ``%u`` (the username, which is the device id) grant
  every device the same rights on its own topics, so the ACL does not grow with the fleet
  and adding a device never touches it; the hub's user gets read on the whole root and
  write on the config topics. ``ensure_acl`` keeps one marked block per topic root.
* **Certificates** through the ``openssl`` command line: a CA, a server certificate for
  the broker, and client certificates whose common name is the device id (the TLS
  listener uses it as the username, so the same ACL applies).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from edge_agent.contract import DEFAULT_TOPIC_ROOT

BROKER_DIR = Path("/etc/mosquitto/audience")
DEFAULT_HUB_USER = "hub"
PBKDF2_ITERATIONS = 101  # Mosquitto 2's default; the passwords are random, not guessable.
SALT_BYTES = 12  # as mosquitto_passwd
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # the contract's IdString
_ROOT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63})*$")


class CredentialsError(ValueError):
    """A request the credential files cannot honour (bad name, unknown user, ...)."""


def check_username(name: str) -> str:
    """A device id or hub user name: the contract's id rules (no ``/ + # :``)."""
    if not _USERNAME.match(name):
        raise CredentialsError(
            f"{name!r} is not a valid id: letters, digits and _.- only, at most 64, "
            "starting with a letter or digit"
        )
    return name


def new_password() -> str:
    """256 random bits, URL-safe, fits any TOML or shell quoting."""
    return secrets.token_urlsafe(32)


# --- the password file -----------------------------------------------------------------


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2's ``$7$iterations$salt$hash`` (PBKDF2-HMAC-SHA512, base64 parts)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(encoded: str, password: str) -> bool:
    """Whether ``password`` matches a ``$7$`` (PBKDF2) or ``$6$`` (salted SHA-512) hash."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, expected = int(parts[2]), parts[3], parts[4]
            digest = hashlib.pbkdf2_hmac(
                "sha512", password.encode("utf-8"), base64.b64decode(salt), iterations
            )
        elif len(parts) == 4 and parts[1] == "6":
            salt, expected = parts[2], parts[3]
            digest = hashlib.sha512(password.encode("utf-8") + base64.b64decode(salt)).digest()
        else:
            return False
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except ValueError:
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` so two commands never interleave their writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str, mode: int = 0o640) -> None:
    """Replace ``path`` in one step, keeping its mode and owner (the broker must read it)."""
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        owner = None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        if owner is not None and os.geteuid() == 0:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def list_users(password_file: Path) -> list[str]:
    """The users the password file holds, in file order."""
    return [
        line.split(":", 1)[0]
        for line in _read_lines(password_file)
        if ":" in line and not line.startswith("#")
    ]


def set_password(
    password_file: Path, username: str, password: str, *, must_exist: bool | None = None
) -> None:
    """Add or replace ``username``'s entry. ``must_exist``: True to rotate, False to add."""
    check_username(username)
    entry = f"{username}:{hash_password(password)}"
    with _locked(password_file):
        lines = _read_lines(password_file)
        index = next((i for i, line in enumerate(lines) if line.split(":", 1)[0] == username), None)
        if must_exist is True and index is None:
            raise CredentialsError(f"{username!r} is not in {password_file}")
        if must_exist is False and index is not None:
            raise CredentialsError(
                f"{username!r} already exists in {password_file}; use rotate for a new password"
            )
        if index is None:
            lines.append(entry)
        else:
            lines[index] = entry
        _write_atomic(password_file, "\n".join(lines) + "\n")


def remove_user(password_file: Path, username: str) -> bool:
    """Delete ``username``'s entry; whether there was one."""
    with _locked(password_file):
        lines = _read_lines(password_file)
        kept = [line for line in lines if line.split(":", 1)[0] != username]
        if len(kept) == len(lines):
            return False
        _write_atomic(password_file, "".join(f"{line}\n" for line in kept))
        return True


# --- the ACL -------------------------------------------------------------------------------


def acl_block(topic_root: str = DEFAULT_TOPIC_ROOT, hub_user: str = DEFAULT_HUB_USER) -> str:
    """The ACL lines for one topic root, between markers ``ensure_acl`` recognises."""
    if not _ROOT.match(topic_root):
        raise CredentialsError(f"bad topic root {topic_root!r}")
    check_username(hub_user)
    r = topic_root
    return (
        f"# BEGIN audience topic_root={r} (kept by `cloud-hub device`; edit outside markers)\n"
        f"# The hub reads everything under the root and pushes device configuration.\n"
        f"user {hub_user}\n"
        f"topic read {r}/#\n"
        f"topic write {r}/v1/+/config\n"
        f"# Every device (username = device id) writes only its own topics and reads only\n"
        f"# its own configuration.\n"
        f"pattern write {r}/v1/%u/events/+\n"
        f"pattern write {r}/v1/%u/occupancy/+\n"
        f"pattern write {r}/v1/%u/status\n"
        f"pattern write {r}/v1/%u/health\n"
        f"pattern write {r}/v1/%u/counts/+\n"
        f"pattern write {r}/v1/%u/availability\n"
        f"pattern read {r}/v1/%u/config\n"
        f"# Home Assistant discovery (optional, the default prefix): a device announces its\n"
        f"# own entities (node id = device id; ids with '.' need their own line) and hears\n"
        f"# Home Assistant's birth message.\n"
        f"pattern write homeassistant/+/%u/+/config\n"
        f"pattern read homeassistant/status\n"
        f"# END audience topic_root={r}\n"
    )


def ensure_acl(
    acl_file: Path, topic_root: str = DEFAULT_TOPIC_ROOT, hub_user: str = DEFAULT_HUB_USER
) -> bool:
    """Make the ACL hold this root's block (replacing an outdated one); whether it changed."""
    block = acl_block(topic_root, hub_user)
    begin = f"# BEGIN audience topic_root={topic_root} "
    end = f"# END audience topic_root={topic_root}"
    with _locked(acl_file):
        try:
            text = acl_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        start = text.find(begin)
        if start >= 0:
            stop = text.find(end, start)
            if stop < 0:
                raise CredentialsError(f"{acl_file}: {begin.strip()} has no END marker")
            stop = text.find("\n", stop)
            stop = len(text) if stop < 0 else stop + 1
            new = text[:start] + block + text[stop:]
        else:
            new = text + ("\n" if text and not text.endswith("\n\n") else "") + block
        if new == text:
            return False
        _write_atomic(acl_file, new)
        return True


# --- certificates (openssl CLI) ----------------------------------------------------------


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise CredentialsError("the openssl command is needed: apt-get install openssl")
    done = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CredentialsError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def make_ca(directory: Path, name: str = "audience fleet CA", days: int = 3650) -> Path:
    """A new CA in ``directory`` (``ca.pem``, ``ca.key`` readable by the owner only)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.pem", directory / "ca.key"
    if cert.exists() or key.exists():
        raise CredentialsError(f"{directory} already holds a CA; not overwriting it")
    with _umask(0o077):
        _openssl(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(days),
            "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    cert.chmod(0o644)
    return cert


def issue_cert(
    ca_dir: Path,
    out_dir: Path,
    common_name: str,
    *,
    server_names: Sequence[str] = (),
    days: int = 825,
) -> tuple[Path, Path]:
    """A certificate signed by the CA in ``ca_dir``: ``out_dir/{cn}.pem`` and ``.key``.

    Without ``server_names`` it is a client certificate (a device, or the hub) whose
    common name becomes the MQTT username; with them, a server certificate for the broker
    valid for those DNS names or IP addresses.
    """
    if not server_names:
        check_username(common_name)
    ca_cert, ca_key = ca_dir / "ca.pem", ca_dir / "ca.key"
    if not ca_cert.exists() or not ca_key.exists():
        raise CredentialsError(f"no CA in {ca_dir} (cloud-hub broker ca --dir {ca_dir})")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "server" if server_names else common_name
    cert, key = out_dir / f"{stem}.pem", out_dir / f"{stem}.key"
    if server_names:
        sans = ",".join(
            f"IP:{n}" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]*:[0-9a-fA-F:]*", n) else f"DNS:{n}"
            for n in server_names
        )
        extensions = f"extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n"
    else:
        extensions = "extendedKeyUsage=clientAuth\n"
    extensions = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + extensions
    with tempfile.TemporaryDirectory() as tmp, _umask(0o077):
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text(extensions, encoding="utf-8")
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={common_name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(days),
            "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
    cert.chmod(0o644)
    return cert, key


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# --- rendering the shipped configuration elsewhere -----------------------------------------

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


def render_broker_config(
    out_dir: Path,
    *,
    port: int,
    tls_port: int | None = None,
    certs_dir: Path | None = None,
    bind: str | None = None,
    run_as: str | None = None,
    source: Path = SHIPPED_CONFIG,
) -> Path:
    """The shipped ``mosquitto.conf`` (and ``tls.conf``) with paths under ``out_dir``.

    Only locations change (listener ports, password, ACL, persistence, includes,
    certificates); every other line is the shipped one, so a broker started from the
    result behaves as production does. ``run_as`` adds Mosquitto's ``user`` option (a
    broker started as root otherwise drops to ``mosquitto``, which may not read
    ``out_dir``). Returns the main file's path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "conf.d").mkdir(exist_ok=True)
    (out_dir / "data").mkdir(exist_ok=True)
    suffix = f" {bind}" if bind else ""
    main_values = {
        "listener": f"{port}{suffix}",
        "password_file": str(out_dir / "passwd"),
        "acl_file": str(out_dir / "acl"),
        "persistence_location": f"{out_dir / 'data'}/",
        "include_dir": str(out_dir / "conf.d"),
    }
    main = out_dir / "mosquitto.conf"
    text = _substitute(source / "mosquitto.conf", main_values)
    main.write_text((f"user {run_as}\n" if run_as else "") + text, encoding="utf-8")
    for name in ("passwd", "acl"):
        (out_dir / name).touch()
    if tls_port is not None:
        certs = certs_dir or out_dir / "certs"
        tls_values = {
            "listener": f"{tls_port}{suffix}",
            "cafile": str(certs / "ca.pem"),
            "certfile": str(certs / "server.pem"),
            "keyfile": str(certs / "server.key"),
        }
        (out_dir / "conf.d" / "tls.conf").write_text(
            _substitute(source / "tls.conf", tls_values), encoding="utf-8"
        )
    return main


def _substitute(path: Path, values: dict[str, str]) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        key = line.split(" ", 1)[0]
        lines.append(f"{key} {values[key]}" if key in values else line)
    return "\n".join(lines) + "\n"
