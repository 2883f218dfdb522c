"""Test helpers around the real Mosquitto: a relay that can cut the agent off the broker,
and a watcher of any topics (retained flags included)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import MQTT_HOST, MQTT_PORT


class Watcher:
    """Records every message on ``filters`` from the shared broker: (topic, payload, retain)."""

    def __init__(self, filters: Sequence[str]) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watch-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect(MQTT_HOST, MQTT_PORT)
        self._client.subscribe([(f, 1) for f in filters])
        self._client.loop_start()
        assert subscribed.wait(10), "could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def received(self, suffix: str = "") -> list[tuple[str, bytes, bool]]:
        """Messages whose topic contains ``suffix`` (all by default), in arrival order."""
        with self._lock:
            return [m for m in self.messages if suffix in m[0]]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def retained(topic: str, timeout_s: float = 5.0) -> bytes | None:
    """The broker's retained message on ``topic`` now (``None`` when there is none)."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"ret-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(bytes(msg.payload))
        done.set()

    def on_subscribe(*_: object) -> None:
        # Retained messages arrive right after SUBACK; a short grace covers "none".
        threading.Timer(0.5, done.set).start()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect(MQTT_HOST, MQTT_PORT)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[-1] if got else None


def clear_retained(topics: Sequence[str]) -> None:
    """Remove retained messages a test left on the shared broker."""
    for topic in topics:
        publish_retained(topic, b"")


def publish_retained(topic: str, payload: bytes) -> None:
    """Publish one retained QoS 1 message and wait for the broker's acknowledgement."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"clr-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
