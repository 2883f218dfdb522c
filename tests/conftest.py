"""Shared fixtures: a throwaway database, unique MQTT topic roots, and real running hubs.

Everything runs against the local services (PostgreSQL, Mosquitto, Redis on 127.0.0.1);
nothing is mocked. Each test gets its own topic root, so tests never see each other's
messages, and the session gets its own database, dropped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_hub.security.apikeys import ApiKey, hash_key
from cloud_hub.settings import HubSettings
from edge_agent.contract import AgeEstimate, GenderEstimate, PersonEvent, uuid7

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_HOST = "127.0.0.1"
MQTT_PORT = 1883
# The hubs tests start accept this key (scope admin); RunningHub sends it.
TEST_ADMIN_KEY = "ahk_test-admin-key-for-the-test-suite-only"
TEST_API_KEYS = ApiKey("tests", "admin", hash_key(TEST_ADMIN_KEY)).config_entry()


def free_port() -> int:
    """A TCP port nothing listens on right now, below Linux's ephemeral range (32768+):
    a port the kernel handed out could be taken by some client's outgoing connection
    before the test binds it again."""
    while True:
        port = random.randint(20_000, 32_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_until(check: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET a URL; (status, parsed JSON or text). Never raises for HTTP error statuses."""
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


@dataclass
class RunningHub:
    """A ``cloud-hub serve`` process and how to reach it."""

    base_url: str
    settings: HubSettings
    topic_root: str
    process: subprocess.Popen[bytes]
    log_path: Path
    api_key: str = TEST_ADMIN_KEY

    def get(self, path: str) -> Any:
        """GET a JSON endpoint with the admin API key, asserting 200."""
        status, body = self.request(path)
        assert status == 200, (status, body)
        return body

    def request(self, path: str) -> tuple[int, Any]:
        """GET any endpoint with the admin API key: (status, body)."""
        return http_get(self.base_url + path, {"X-API-Key": self.api_key})

    def metric(self, name: str, **labels: str) -> float:
        """One sample from ``/metrics`` (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = self.request("/metrics")
        assert status == 200
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def log(self) -> str:
        """What the hub printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (SIGKILL to simulate a crash)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def settings_env(settings: HubSettings) -> dict[str, str]:
    """The ``HUB_*`` environment that reproduces ``settings`` in another process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"HUB_{name.upper()}"] = str(value)
    return env


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test session (the hub creates it), dropped at the end."""
    name = f"audience_test_{uuid.uuid4().hex[:10]}"
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """``free_port()``: a TCP port nothing listens on (for a broker that is not there)."""
    return free_port


@pytest.fixture
def topic_root() -> str:
    """A topic root no other test publishes under."""
    return f"test-{uuid.uuid4().hex[:12]}"


@dataclass
class HubFactory:
    """Starts hubs for one test and stops them all at its end."""

    database_url: str
    topic_root: str
    tmp_path: Path
    hubs: list[RunningHub] = field(default_factory=list)

    def settings(self, **overrides: Any) -> HubSettings:
        """Test defaults (unique client id, console logs, short batches) plus overrides."""
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "topic_root": self.topic_root,
            "mqtt_host": MQTT_HOST,
            "mqtt_port": MQTT_PORT,
            "mqtt_client_id": f"hub-{self.topic_root}",
            "mqtt_session_expiry_s": 300,
            "http_host": "127.0.0.1",
            "http_port": free_port(),
            "log_format": "console",
            "batch_max_wait_s": 0.05,
            "state_dir": self.tmp_path / "hub-state",
            "api_keys": TEST_API_KEYS,
        }
        values.update(overrides)
        return HubSettings(**values)

    def start(
        self, settings: HubSettings | None = None, *, healthy: bool = True, **overrides: Any
    ) -> RunningHub:
        """Run ``cloud-hub serve``; wait until ``/healthz`` says ingest works (or just answers)."""
        settings = settings or self.settings(**overrides)
        log_path = self.tmp_path / f"hub-{len(self.hubs)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        env.update(settings_env(settings))
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "cloud_hub.cli", "serve"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        hub = RunningHub(settings.api_url, settings, settings.topic_root, process, log_path)
        self.hubs.append(hub)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"hub exited with {process.returncode}:\n{hub.log()}")
            try:
                status = http_get(hub.base_url + "/healthz")[0]
            except OSError:
                return False
            return status == 200 or not healthy

        wait_until(ready, 30, "hub health")
        return hub

    def stop_all(self) -> None:
        """Stop every hub this factory started."""
        for hub in self.hubs:
            hub.stop()


@pytest.fixture
def hub_factory(database_url: str, topic_root: str, tmp_path: Path) -> Iterator[HubFactory]:
    """Start hubs with custom settings: ``hub_factory.start(mqtt_protocol="3.1.1")``."""
    factory = HubFactory(database_url, topic_root, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def hub(hub_factory: HubFactory) -> RunningHub:
    """A running hub (MQTT 5, shared subscription): .base_url, .settings, .topic_root."""
    return hub_factory.start()


def make_event(
    device_id: str = "dev-1",
    camera_id: str = "cam-1",
    *,
    last_seen: datetime | None = None,
    dwell_s: float = 4.0,
    gender: str | None = "female",
    age: float | None = 30.0,
    track_id: int = 1,
    watcher: bool = True,
    attention_s: float | None = None,
    schema_version: int = 2,
) -> PersonEvent:
    """A valid event; ``gender``/``age`` of ``None`` means the device could not tell.
    Schema 2 by default (attention half the dwell for a watcher); ``schema_version=1`` is
    what a 0.1 agent sends (no watcher, no attention)."""
    if schema_version == 1:
        watcher_field, attention = None, None
    else:
        watcher_field = watcher
        attention = attention_s if attention_s is not None else (dwell_s / 2 if watcher else 0.0)
    last = last_seen or datetime.now(UTC)
    return PersonEvent(
        event_id=uuid7(),
        device_id=device_id,
        camera_id=camera_id,
        track_id=track_id,
        first_seen=last - timedelta(seconds=dwell_s),
        last_seen=last,
        dwell_s=dwell_s,
        gender=None if gender is None else GenderEstimate(value=gender, confidence=0.9),
        age=None
        if age is None
        else AgeEstimate(
            value=age, low=max(0.0, age - 5), high=min(120.0, age + 5), confidence=0.6
        ),
        crops=3,
        watcher=watcher_field,
        attention_s=attention,
        schema_version=schema_version,
        models={"detector": "blazeface-full", "age": "dlib-int8"},
    )


@pytest.fixture
def event_factory() -> Callable[..., PersonEvent]:
    """``event_factory(device_id, camera_id, last_seen=..., gender=..., age=...)``."""
    return make_event


def event_topic(root: str, event: PersonEvent) -> str:
    """Where the agent publishes ``event``."""
    return f"{root}/v1/{event.device_id}/events/{event.camera_id}"


Publish = Callable[[Sequence[tuple[str, bytes]]], None]


def publish_messages(
    messages: Sequence[tuple[str, bytes]],
    protocol: str = "5",
    host: str = MQTT_HOST,
    port: int = MQTT_PORT,
) -> None:
    """Publish raw messages with QoS 1 and wait until the broker has acknowledged each."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
    )
    client.max_inflight_messages_set(100)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=20)
            assert info.is_published(), "broker did not acknowledge a publish"
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def publish() -> Publish:
    """Publish ``[(topic, payload), ...]`` over the real broker (MQTT 5, QoS 1)."""
    return publish_messages


def publish_event_list(root: str, events: Sequence[PersonEvent], protocol: str = "5") -> None:
    """Publish events to their topics as an agent would."""
    publish_messages(
        [(event_topic(root, e), e.model_dump_json().encode()) for e in events], protocol
    )


@pytest.fixture
def publish_events() -> Callable[..., None]:
    """``publish_events(topic_root, events, protocol="5")``: publish as an agent would."""
    return publish_event_list


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    """``wait_until(check, timeout_s=20, what="...")``: poll until ``check()`` is truthy."""
    return wait_until


@pytest.fixture
def db(database_url: str) -> Callable[..., list[asyncpg.Record]]:
    """Run one query against the test database: ``db("SELECT ...", *args)``."""

    def fetch(sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(database_url)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    return fetch
