"""The shipped Mosquitto configuration enforces who may publish and read what.

Each test runs a private broker from deploy/mosquitto (see conftest.py); the reason
codes asserted are what Mosquitto 2.0 actually answers.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from cloud_hub.security import broker_auth as ba
from edge_agent.config import AgentConfig
from tests.conftest import wait_until
from tests.security.conftest import HUB_USER, Client, PrivateBroker

NOT_AUTHORIZED = 135  # MQTT 5 reason 0x87
NO_SUBSCRIBERS = 16  # MQTT 5 PUBACK 0x10: accepted, nobody subscribed (yet)
ACCEPTED = (0, NO_SUBSCRIBERS)


def _connect(clients: list[Client], client: Client) -> Client:
    clients.append(client)
    reason = client.connect()
    assert reason is not None and not reason.is_failure, reason
    return client


def _hub(broker: PrivateBroker, clients: list[Client]) -> Client:
    """The hub's user with the hub's shared subscription to every device's events."""
    hub = _connect(clients, Client(broker.config(HUB_USER)))
    reasons = hub.subscribe(f"$share/hub/{broker.topic_root}/v1/+/events/+")
    assert [r.value for r in reasons] == [1], reasons  # granted QoS 1
    return hub


def test_device_publishes_its_own_events_and_the_hub_receives_them(
    broker: PrivateBroker, clients: list[Client]
) -> None:
    hub = _hub(broker, clients)
    dev = _connect(clients, Client(broker.config("dev-a")))
    root = broker.topic_root
    assert dev.publish(f"{root}/v1/dev-a/events/cam-1", b'{"n": 1}').value == 0
    for topic in ("status", "health", "occupancy/cam-1"):
        # Accepted; 16 "No matching subscribers" as the hub here subscribes to events only.
        assert dev.publish(f"{root}/v1/dev-a/{topic}").value == 16, topic
    wait_until(lambda: hub.received(), 10, "the event at the hub")
    assert hub.received() == [(f"{root}/v1/dev-a/events/cam-1", b'{"n": 1}')]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_device_cannot_publish_under_another_device(
    broker: PrivateBroker, clients: list[Client], protocol: str
) -> None:
    hub = _connect(clients, Client(broker.config(HUB_USER)))
    hub.subscribe(f"{broker.topic_root}/#")
    dev = _connect(clients, Client(broker.config("dev-a", protocol=protocol)))
    root = broker.topic_root
    forged = [
        f"{root}/v1/dev-b/events/cam-1",
        f"{root}/v1/dev-b/status",
        f"{root}/v1/dev-a/config",  # only the hub writes configuration
        f"{root}/v1/dev-a/events/cam-1/extra",
        f"{root}/v2/dev-a/events/cam-1",
        "elsewhere/v1/dev-a/events/cam-1",
    ]
    reasons = [dev.publish(topic, b"forged").value for topic in forged]
    if protocol == "5":
        # Mosquitto 2 answers a refused QoS 1 publish with PUBACK "Not authorized".
        assert reasons == [NOT_AUTHORIZED] * len(forged)
    else:
        # MQTT 3.1.1 has no reason codes: a plain PUBACK, and the message is dropped.
        assert reasons == [0] * len(forged)
    # A legitimate message sent after the forged ones arrives; the forged ones never do.
    assert dev.publish(f"{root}/v1/dev-a/events/cam-1", b"real").value == 0
    wait_until(lambda: hub.received(), 10, "the real event")
    time.sleep(0.3)
    assert hub.received() == [(f"{root}/v1/dev-a/events/cam-1", b"real")]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_no_credentials_or_a_wrong_password_cannot_connect(
    broker: PrivateBroker, clients: list[Client], protocol: str
) -> None:
    cases = {
        "anonymous": broker.config(None, protocol=protocol),
        "wrong password": broker.config("dev-a", "not-the-password", protocol=protocol),
        "unknown user": broker.config("dev-zz", "whatever", protocol=protocol),
        "another's password": broker.config("dev-a", broker.passwords["dev-b"], protocol=protocol),
    }
    answers = {}
    for what, cfg in cases.items():
        client = Client(cfg)
        clients.append(client)
        reason = client.connect()
        assert reason is not None and reason.is_failure, (what, reason)
        answers[what] = reason.value
    if protocol == "5":
        # Mosquitto 2.0 answers every refusal with 0x87 Not authorized (not 0x86).
        assert answers == dict.fromkeys(cases, NOT_AUTHORIZED)
    else:
        # paho maps 3.1.1 CONNACK code 5 (not authorised) to the same reason.
        assert answers == dict.fromkeys(cases, NOT_AUTHORIZED)


def test_device_reads_only_its_own_config(broker: PrivateBroker, clients: list[Client]) -> None:
    root = broker.topic_root
    hub = _connect(clients, Client(broker.config(HUB_USER)))
    for device in ("dev-a", "dev-b"):
        payload = f"config for {device}".encode()
        reason = hub.publish(f"{root}/v1/{device}/config", payload, retain=True)
        assert reason.value in ACCEPTED
    dev = _connect(clients, Client(broker.config("dev-a")))
    # Mosquitto 2.0.11 grants these SUBSCRIBEs (QoS 1): its ACL plugin checks read access
    # per message at delivery, not per filter at subscribe time. So nothing is delivered.
    for topic in (
        f"{root}/v1/dev-b/config",
        f"{root}/v1/+/config",
        f"{root}/#",
        f"{root}/v1/dev-b/events/+",
    ):
        assert [r.value for r in dev.subscribe(topic)] == [1], topic
    # A fresh message for another device, after the subscriptions: still not delivered.
    hub.publish(f"{root}/v1/dev-b/config", b"newer config for dev-b", retain=True)
    hub.publish(f"{root}/v1/dev-b/events/cam-1", b"an event")
    assert [r.value for r in dev.subscribe(f"{root}/v1/dev-a/config")] == [1]
    wait_until(lambda: dev.received(), 10, "the retained config")
    time.sleep(0.5)
    # Only its own retained config, once per matching subscription ({root}/# and the
    # two config filters match it too: Mosquitto sends a retained message per SUBSCRIBE).
    assert {t for t, _ in dev.received()} == {f"{root}/v1/dev-a/config"}
    assert {p for _, p in dev.received()} == {b"config for dev-a"}


def _refused_over_tls(client: Client) -> bool:
    """True when the TLS listener ended the connection before any CONNACK."""
    try:
        reason = client.connect(timeout_s=3)
    except (ssl.SSLError, ConnectionError):
        return True  # TLS 1.2, or the alert arrived during the handshake
    # TLS 1.3: the client's handshake completes first, then the broker checks the
    # certificate and closes the connection, so there is never a CONNACK.
    return reason is None and not client.connected.is_set()


def test_tls_device_connects_with_its_certificate_and_not_without(
    broker: PrivateBroker, clients: list[Client]
) -> None:
    root = broker.topic_root
    hub = _hub(broker, clients)
    # The agent's own configuration path: MqttConfig -> configure_client.
    dev = _connect(clients, Client(broker.tls_config("dev-a")))
    assert dev.publish(f"{root}/v1/dev-a/events/cam-1", b"over tls").value == 0
    # The certificate's CN is the username, so the ACL holds over TLS too.
    assert dev.publish(f"{root}/v1/dev-b/events/cam-1", b"forged").value == NOT_AUTHORIZED
    wait_until(lambda: hub.received(), 10, "the TLS event at the hub")
    time.sleep(0.3)
    assert hub.received() == [(f"{root}/v1/dev-a/events/cam-1", b"over tls")]

    # No client certificate: the broker ends the TLS session.
    bare = Client(broker.tls_config(None))
    clients.append(bare)
    assert _refused_over_tls(bare)
    # A username and password are no substitute for the certificate on this listener.
    with_password = Client(
        broker.tls_config(None, username="dev-a", password=broker.passwords["dev-a"])
    )
    clients.append(with_password)
    assert _refused_over_tls(with_password)
    assert "peer did not return a certificate" in broker.log()


def test_a_certificate_from_another_ca_is_refused(
    broker: PrivateBroker, clients: list[Client], tmp_path: Path
) -> None:
    rogue = tmp_path / "rogue"
    ba.make_ca(rogue, name="rogue CA")
    ba.issue_cert(rogue, rogue, "dev-a")
    cfg = broker.tls_config(None, tls_cert=rogue / "dev-a.pem", tls_key=rogue / "dev-a.key")
    client = Client(cfg)
    clients.append(client)
    assert _refused_over_tls(client)
    assert "certificate verify failed" in broker.log()


def test_the_cli_adds_rotates_and_removes_a_device(
    broker: PrivateBroker, clients: list[Client]
) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "cloud_hub.cli", "device", *args),
                *("--password-file", str(broker.password_file)),
                *("--acl-file", str(broker.acl_file)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def agent_mqtt(stdout: str) -> AgentConfig:
        toml = "\n".join(line for line in stdout.splitlines() if not line.startswith("#"))
        cfg = AgentConfig.model_validate(tomllib.loads(toml))
        return cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"host": "127.0.0.1"})})

    acl_before = broker.acl_file.read_text()
    port = str(broker.port)
    added = cli("add", "dev-c", "--topic-root", broker.topic_root, "--port", port)
    assert added.returncode == 0, added.stderr
    assert broker.acl_file.read_text() == acl_before  # the pattern block already covers it
    assert "unchanged" in added.stdout
    cfg = agent_mqtt(added.stdout)
    assert cfg.mqtt.port == broker.port
    assert cfg.device_id == cfg.mqtt.username == "dev-c"
    assert cli("add", "dev-c", "--topic-root", broker.topic_root).returncode == 2  # exists

    broker.reload()
    dev = _connect(clients, Client(cfg.mqtt))
    topic = f"{broker.topic_root}/v1/dev-c/events/cam-1"
    assert dev.publish(topic).value in ACCEPTED

    rotated = cli("rotate", "dev-c", "--topic-root", broker.topic_root, "--port", port)
    assert rotated.returncode == 0, rotated.stderr
    new_cfg = agent_mqtt(rotated.stdout)
    assert new_cfg.mqtt.password != cfg.mqtt.password
    broker.reload()
    # Mosquitto 2.0 re-checks connected clients on reload: the old password's session ends.
    assert dev.disconnected.wait(5)
    old = Client(cfg.mqtt)
    clients.append(old)
    assert old.connect().value == NOT_AUTHORIZED  # type: ignore[union-attr]
    current = _connect(clients, Client(new_cfg.mqtt))

    assert cli("remove", "dev-c").returncode == 0
    assert "dev-c" not in cli("list").stdout
    broker.reload()
    assert current.disconnected.wait(5)  # retired: its live connection ends too
    gone = Client(new_cfg.mqtt)
    clients.append(gone)
    assert gone.connect().value == NOT_AUTHORIZED  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
def test_hashes_match_mosquitto_passwd(tmp_path: Path) -> None:
    """Ours verify theirs (the broker accepting ours is every test above)."""
    path = tmp_path / "passwd"
    path.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(path), "u", "pa55"], check=True)
    encoded = path.read_text().strip().split(":", 1)[1]
    assert encoded.startswith("$7$")
    assert ba.verify_password(encoded, "pa55")
    assert not ba.verify_password(encoded, "pa56")
    ours = ba.hash_password("pa55")
    assert ba.verify_password(ours, "pa55") and not ba.verify_password(ours, "x")


def test_the_shipped_acl_is_what_the_tool_writes(tmp_path: Path) -> None:
    shipped = ba.SHIPPED_CONFIG / "acl"
    assert shipped.read_text() == ba.acl_block()
    copy = tmp_path / "acl"
    copy.write_text(shipped.read_text())
    assert not ba.ensure_acl(copy)  # idempotent
    assert ba.ensure_acl(copy, "other-root")
    assert not ba.ensure_acl(copy, "other-root")
    assert copy.read_text().count("# BEGIN audience") == 2
