"""``cloud-hub apikey``, ``cloud-hub device`` and ``cloud-hub broker``: credentials.

* ``apikey create --scope read`` prints a new API key and its ``HUB_API_KEYS`` entry.
* ``device add|rotate|remove|list`` manage a device's broker user (password file) and
  keep the ACL's block for the topic root; ``add``/``rotate`` print the agent's TOML.
* ``device cert`` issues a device's client certificate for the TLS listener.
* ``broker ca|server-cert|hub-user|render`` set up the broker side.

Nothing here talks to a running broker: after changing the password or ACL file,
reload it (``systemctl reload mosquitto`` or ``kill -HUP``). See docs/security.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cloud_hub.security import broker_auth as ba
from cloud_hub.security.apikeys import SCOPES, Scope, new_key
from edge_agent.contract import DEFAULT_TOPIC_ROOT

RELOAD_HINT = "reload the broker to apply: systemctl reload mosquitto (or kill -HUP its pid)"


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def agent_toml(
    device_id: str,
    *,
    host: str,
    port: int,
    topic_root: str,
    password: str | None = None,
    tls_dir: str | None = None,
) -> str:
    """The agent configuration lines that connect ``device_id`` to the broker."""
    lines = [
        f"device_id = {_q(device_id)}",
        "",
        "[mqtt]",
        f"host = {_q(host)}",
        f"port = {port}",
        f"topic_root = {_q(topic_root)}",
    ]
    if password is not None:
        lines += [f"username = {_q(device_id)}", f"password = {_q(password)}"]
    if tls_dir is not None:
        lines += [
            f"tls_ca = {_q(f'{tls_dir}/ca.pem')}",
            f"tls_cert = {_q(f'{tls_dir}/{device_id}.pem')}",
            f"tls_key = {_q(f'{tls_dir}/{device_id}.key')}",
        ]
    return "\n".join(lines) + "\n"


def _files(args: argparse.Namespace) -> tuple[Path, Path]:
    base = Path(args.broker_dir)
    return (
        Path(args.password_file) if args.password_file else base / "passwd",
        Path(args.acl_file) if args.acl_file else base / "acl",
    )


def _device_add(args: argparse.Namespace, *, rotate: bool) -> int:
    passwd, acl = _files(args)
    device = ba.check_username(args.device_id)
    if device == args.hub_user:
        raise ba.CredentialsError(f"{device!r} is the hub's user name; pick another device id")
    password = ba.new_password()
    ba.set_password(passwd, device, password, must_exist=rotate)
    changed = ba.ensure_acl(acl, args.topic_root, args.hub_user)
    verb = "rotated the password of" if rotate else "added"
    print(f"# {verb} {device} in {passwd}; ACL {acl} {'updated' if changed else 'unchanged'}")
    print(f"# {RELOAD_HINT}")
    print("# The device's /etc/edge-agent/agent.toml (the password is shown only now):")
    print(
        agent_toml(
            device,
            host=args.host,
            port=args.port,
            topic_root=args.topic_root,
            password=password,
        ),
        end="",
    )
    return 0


def _device_remove(args: argparse.Namespace) -> int:
    passwd, _ = _files(args)
    if not ba.remove_user(passwd, args.device_id):
        print(f"{args.device_id} is not in {passwd}", file=sys.stderr)
        return 1
    print(f"removed {args.device_id} from {passwd}; {RELOAD_HINT}")
    print("A client certificate it holds stays valid until it expires: see docs/security.md.")
    return 0


def _device_list(args: argparse.Namespace) -> int:
    passwd, _ = _files(args)
    for user in ba.list_users(passwd):
        print(user)
    return 0


def _device_cert(args: argparse.Namespace) -> int:
    ca_dir = Path(args.ca_dir)
    out = Path(args.out or ca_dir)
    cert, key = ba.issue_cert(ca_dir, out, args.device_id, days=args.days)
    print(f"# issued {cert} and {key} (CN={args.device_id}); copy them and ca.pem to the device")
    print(
        agent_toml(
            args.device_id,
            host=args.host,
            port=args.port,
            topic_root=args.topic_root,
            tls_dir=args.device_dir,
        ),
        end="",
    )
    return 0


def _broker_ca(args: argparse.Namespace) -> int:
    cert = ba.make_ca(Path(args.dir), days=args.days)
    print(f"created {cert} and its key; keep ca.key offline, off the broker")
    return 0


def _broker_server_cert(args: argparse.Namespace) -> int:
    cert, key = ba.issue_cert(
        Path(args.ca_dir), Path(args.out), args.name[0], server_names=args.name, days=args.days
    )
    print(f"issued {cert} and {key} for {', '.join(args.name)}")
    return 0


def _broker_hub_user(args: argparse.Namespace) -> int:
    passwd, acl = _files(args)
    password = ba.new_password()
    ba.set_password(passwd, ba.check_username(args.name), password)
    ba.ensure_acl(acl, args.topic_root, args.name)
    print(f"# {args.name} set in {passwd}; {RELOAD_HINT}")
    print("# The hub's environment (the password is shown only now):")
    print(f"HUB_MQTT_USERNAME={args.name}\nHUB_MQTT_PASSWORD={password}")
    return 0


def _broker_render(args: argparse.Namespace) -> int:
    main = ba.render_broker_config(
        Path(args.out), port=args.port, tls_port=args.tls_port, bind=args.bind
    )
    print(f"wrote {main}; run: mosquitto -c {main}")
    return 0


def _apikey_create(args: argparse.Namespace) -> int:
    scope: Scope = args.scope
    key, entry = new_key(args.name or f"{scope}-key", scope)
    print(f"API key (shown only now; send it as X-API-Key or Authorization: Bearer):\n{key}")
    print(f"\nAdd this entry to HUB_API_KEYS (comma-separated):\n{entry.config_entry()}")
    return 0


def _run(func: Any, **kwargs: Any) -> Any:
    def call(args: argparse.Namespace, _settings: object) -> int:
        if getattr(args, "port", 0) is None:  # 1883 for passwords, 8883 for certificates
            args.port = args.port_default
        try:
            code: int = func(args, **kwargs)
        except ba.CredentialsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return code

    return call


def add_security_commands(sub: Any) -> None:
    """Add ``apikey``, ``device`` and ``broker`` to the ``cloud-hub`` parser."""
    apikey = sub.add_parser("apikey", help="create API keys for the HTTP API")
    apikey_sub = apikey.add_subparsers(dest="apikey_command", required=True)
    create = apikey_sub.add_parser("create", help="print a new key and its HUB_API_KEYS entry")
    create.add_argument("--scope", choices=SCOPES, default="read")
    create.add_argument("--name", help="who holds it (default: <scope>-key)")
    create.set_defaults(func=_run(_apikey_create))

    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("--broker-dir", default=str(ba.BROKER_DIR), help="default %(default)s")
    files.add_argument("--password-file", help="default <broker-dir>/passwd")
    files.add_argument("--acl-file", help="default <broker-dir>/acl")
    files.add_argument("--topic-root", default=DEFAULT_TOPIC_ROOT)
    files.add_argument("--hub-user", default=ba.DEFAULT_HUB_USER)
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--host", default="broker.example.com", help="the broker, for the TOML")
    conn.add_argument("--port", type=int, help="default 1883, or 8883 for `cert`")

    device = sub.add_parser("device", help="a device's broker credentials and certificate")
    dsub = device.add_subparsers(dest="device_command", required=True)
    add = dsub.add_parser("add", parents=[files, conn], help="new user + ACL; prints agent TOML")
    add.add_argument("device_id")
    add.set_defaults(func=_run(_device_add, rotate=False), port_default=1883)
    rotate = dsub.add_parser("rotate", parents=[files, conn], help="a new password")
    rotate.add_argument("device_id")
    rotate.set_defaults(func=_run(_device_add, rotate=True), port_default=1883)
    remove = dsub.add_parser("remove", parents=[files], help="retire: delete its user")
    remove.add_argument("device_id")
    remove.set_defaults(func=_run(_device_remove))
    listing = dsub.add_parser("list", parents=[files], help="users in the password file")
    listing.set_defaults(func=_run(_device_list))
    cert = dsub.add_parser("cert", parents=[conn], help="a client certificate (TLS listener)")
    cert.add_argument("device_id")
    cert.add_argument("--ca-dir", required=True, help="holds ca.pem and ca.key")
    cert.add_argument("--out", help="where to write <id>.pem/.key (default: --ca-dir)")
    cert.add_argument("--days", type=int, default=825)
    cert.add_argument("--topic-root", default=DEFAULT_TOPIC_ROOT)
    cert.add_argument(
        "--device-dir", default="/etc/edge-agent/tls", help="where the files go on the device"
    )
    cert.set_defaults(func=_run(_device_cert), port_default=8883)

    broker = sub.add_parser("broker", help="broker-side setup: CA, certificates, hub user")
    bsub = broker.add_subparsers(dest="broker_command", required=True)
    ca = bsub.add_parser("ca", help="create a CA (ca.pem, ca.key)")
    ca.add_argument("--dir", required=True)
    ca.add_argument("--days", type=int, default=3650)
    ca.set_defaults(func=_run(_broker_ca))
    server = bsub.add_parser("server-cert", help="the broker's TLS certificate")
    server.add_argument("--ca-dir", required=True)
    server.add_argument("--out", required=True, help="writes server.pem and server.key")
    server.add_argument(
        "--name", action="append", required=True, help="DNS name or IP (repeatable)"
    )
    server.add_argument("--days", type=int, default=825)
    server.set_defaults(func=_run(_broker_server_cert))
    hub_user = bsub.add_parser("hub-user", parents=[files], help="the hub's broker user")
    hub_user.add_argument("name", nargs="?", default=ba.DEFAULT_HUB_USER)
    hub_user.set_defaults(func=_run(_broker_hub_user))
    render = bsub.add_parser("render", help="deploy/mosquitto with paths under a directory")
    render.add_argument("--out", required=True)
    render.add_argument("--port", type=int, default=1883)
    render.add_argument("--tls-port", type=int, help="also the TLS listener (certs in OUT/certs)")
    render.add_argument("--bind", help="listen address (default: all)")
    render.set_defaults(func=_run(_broker_render))
