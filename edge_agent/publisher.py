"""Publishes person events over MQTT (QoS 1), to MQTT 5 or 3.1.1 brokers.

paho owns the network loop in its own thread; ``publish`` only hands a message over.
Until the broker acknowledges a message paho keeps it and resends it after a reconnect,
and ``close`` waits for every acknowledgement, so a clean shutdown loses nothing. (A
durable on-disk outbox that survives a crash is the next step; see docs/edge-agent.md.)
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttConfig
from edge_agent.contract import EventTopic, PersonEvent

log = structlog.get_logger(__name__)


class MqttPublisher:
    """One connection per agent; thread-safe ``publish`` from every camera thread."""

    def __init__(self, config: MqttConfig, client_id: str) -> None:
        self.config = config
        protocol = mqtt.MQTTv5 if config.protocol == "5" else mqtt.MQTTv311
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        if config.username:
            self._client.username_pw_set(config.username, config.password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        # Message ids the broker has not acknowledged. Tracked from PUBACKs rather than
        # MQTTMessageInfo.is_published(), which raises for messages queued while offline
        # even after they were delivered.
        self._pending: set[int] = set()
        self._acked_early: set[int] = set()  # PUBACK seen before publish() returned
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self._closing = False
        self.published = 0

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect in the background; wait up to ``timeout_s`` for the first CONNACK.

        Not connecting in time is logged, not fatal: messages queue until the broker
        is back, which is what a camera device on a flaky network needs.
        """
        cfg = self.config
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()
        if not self.connected.wait(timeout_s):
            log.warning("mqtt_not_connected_yet", host=cfg.host, port=cfg.port)

    def publish(self, event: PersonEvent) -> None:
        """Queue one event for delivery with QoS 1 (sent now, or after reconnecting)."""
        topic = str(EventTopic(self.config.topic_root, event.device_id, event.camera_id))
        # Not under self._lock: paho calls on_publish while holding its own mutex, which
        # publish() also takes, so holding ours here could deadlock.
        info = self._client.publish(topic, event.model_dump_json(), qos=1)
        with self._lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._pending.add(info.mid)
            self.published += 1

    def unacknowledged(self) -> int:
        """Messages handed to paho that the broker has not acknowledged yet."""
        with self._lock:
            return len(self._pending)

    def close(self, timeout_s: float = 30.0) -> int:
        """Wait for acknowledgements, then disconnect; returns how many were left unacked."""
        deadline = time.monotonic() + timeout_s
        while self.unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.unacknowledged()
        if left:
            log.error("mqtt_unacknowledged_on_close", count=left)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        return left

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                self._acked_early.add(mid)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        if reason.is_failure:
            log.error("mqtt_connect_refused", reason=str(reason))
            return
        log.info("mqtt_connected", host=self.config.host, protocol=self.config.protocol)
        self.connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        self.connected.clear()
        if self._closing:
            log.info("mqtt_disconnected", reason=str(reason))
        else:
            log.warning("mqtt_disconnected", reason=str(reason))
