"""A live consumer of every device's events under one topic root, for tests."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contract import events_subscription
from tests.conftest import MQTT_HOST, MQTT_PORT


class Subscriber:
    """A live consumer of every device's events under one topic root (QoS 1)."""

    def __init__(self, topic_root: str) -> None:
        self.messages: list[tuple[str, bytes, int]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect(MQTT_HOST, MQTT_PORT)
        self._client.subscribe(events_subscription(topic_root), qos=1)
        self._client.loop_start()
        assert subscribed.wait(10), "could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos))

    def received(self) -> list[tuple[str, bytes, int]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
