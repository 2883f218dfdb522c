"""A private Mosquitto started from the shipped configuration (deploy/mosquitto/).

The configuration is rendered into the test's tmp dir with free ports; users, the ACL
and certificates are made by the same code ``cloud-hub device``/``broker`` run. The
system broker on 1883 is never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud_hub.security import broker_auth as ba
from edge_agent.config import MqttConfig
from edge_agent.delivery.mqtt_security import configure_client
from tests.conftest import free_port

HOST = "127.0.0.1"
HUB_USER = "hub"


@dataclass
class PrivateBroker:
    """A running Mosquitto with our config; ``passwords`` maps user to password."""

    dir: Path
    port: int
    tls_port: int
    topic_root: str
    process: subprocess.Popen[bytes]
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def certs(self) -> Path:
        return self.dir / "certs"

    @property
    def password_file(self) -> Path:
        return self.dir / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.dir / "acl"

    def add_user(self, name: str) -> str:
        password = ba.new_password()
        ba.set_password(self.password_file, name, password)
        self.passwords[name] = password
        return password

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads the password and ACL files; wait until it has."""
        before = self.log().count("Reloading config.")
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.log().count("Reloading config.") == before:
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, "the broker did not reload"
            time.sleep(0.02)
        time.sleep(0.2)  # the log line comes first, then the files are read

    def log(self) -> str:
        return (self.dir / "broker.log").read_text(errors="replace")

    def config(self, user: str | None, password: str | None = None, **kw: Any) -> MqttConfig:
        """An agent ``[mqtt]`` section for the plain listener."""
        if user is not None and password is None:
            password = self.passwords[user]
        values: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "topic_root": self.topic_root,
            "username": user,
            "password": password,
        }
        values.update(kw)
        return MqttConfig(**values)

    def tls_config(self, device: str | None, **kw: Any) -> MqttConfig:
        """An agent ``[mqtt]`` section for the TLS listener (client certificate if named)."""
        values: dict[str, Any] = {
            "host": HOST,
            "port": self.tls_port,
            "topic_root": self.topic_root,
            "tls_ca": self.certs / "ca.pem",
        }
        if device:
            values |= {"tls_cert": self.certs / f"{device}.pem"}
            values |= {"tls_key": self.certs / f"{device}.key"}
        values.update(kw)
        return MqttConfig(**values)


class Client:
    """A paho client that records what the broker answered: CONNACK, SUBACK, PUBACK."""

    def __init__(self, cfg: MqttConfig, client_id: str | None = None) -> None:
        self.cfg = cfg
        v5 = cfg.protocol == "5"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        configure_client(self.client, cfg)
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.disconnected = threading.Event()
        self.messages: list[mqtt.MQTTMessage] = []
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connack = reason
        if not reason.is_failure:
            self.connected.set()
        self.answered.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._lock:
            self.pubacks[mid] = reason

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with self._lock:
            self.subacks[mid] = list(reasons)

    def connect(self, timeout_s: float = 10.0) -> ReasonCode | None:
        """Connect and wait for the CONNACK (None: the connection itself failed)."""
        self.client.connect(self.cfg.host, self.cfg.port, keepalive=30)
        self.client.loop_start()
        self.answered.wait(timeout_s)
        return self.connack

    def publish(self, topic: str, payload: bytes = b"{}", *, retain: bool = False) -> ReasonCode:
        """QoS 1; returns the PUBACK's reason (always Success over MQTT 3.1.1)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if info.mid in self.pubacks:
                    return self.pubacks[info.mid]
            time.sleep(0.02)
        raise AssertionError(f"no PUBACK for {topic}")

    def subscribe(self, topic: str) -> list[ReasonCode]:
        """QoS 1; returns the SUBACK's reasons (granted QoS or a failure)."""
        _, mid = self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._lock:
                if mid in self.subacks:
                    return self.subacks[mid]
            time.sleep(0.02)
        raise AssertionError(f"no SUBACK for {topic}")

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(m.topic, bytes(m.payload)) for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mosquitto exited:\n{log.read_text(errors='replace')}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("mosquitto did not open its port")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """Mosquitto from deploy/mosquitto with a plain and a TLS listener, a hub user,
    devices ``dev-a`` and ``dev-b`` with passwords and ``dev-a`` with a certificate."""
    root = f"sec-{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "broker"
    port, tls_port = free_port(), free_port()
    while tls_port == port:
        tls_port = free_port()
    main = ba.render_broker_config(
        directory,
        port=port,
        tls_port=tls_port,
        bind=HOST,
        run_as="root" if os.geteuid() == 0 else None,
    )
    certs = directory / "certs"
    ba.make_ca(certs)
    ba.issue_cert(certs, certs, "localhost", server_names=["localhost", HOST])
    ba.issue_cert(certs, certs, "dev-a")
    ba.ensure_acl(directory / "acl", root, HUB_USER)
    log = directory / "broker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["mosquitto", "-c", str(main)], stdout=out, stderr=subprocess.STDOUT
        )
    b = PrivateBroker(directory, port, tls_port, root, process)
    for user in (HUB_USER, "dev-a", "dev-b"):
        b.add_user(user)
    try:
        _wait_port(port, process, log)
        _wait_port(tls_port, process, log)
        # Signal handlers are installed after the listeners open: SIGHUP before would kill it.
        deadline = time.monotonic() + 10
        while "running" not in b.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        b.reload()  # the users were added after the start: prove reload picks them up
        yield b
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Append clients here; they are closed at the end of the test."""
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


__all__ = ["HOST", "HUB_USER", "Client", "PrivateBroker", "ssl"]
