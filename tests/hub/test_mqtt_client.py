"""The hub's fast MQTT client against the real broker: every message arrives once, whole
and in order, whichever path decoded it (the bulk path, or paho's for packets split across
reads, with properties, or of QoS 2), and ``ack_all`` acknowledges them so that a
reconnect with the same session gets nothing again."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_hub.ingest.mqtt_client import FastClient

HOST, PORT = "127.0.0.1", 1883


class Receiver:
    """A FastClient with manual acks that records what arrives, and by which path."""

    def __init__(self, protocol: int, client_id: str, topic: str) -> None:
        self.received: list[tuple[str, bytes, int]] = []
        self.bulk_calls = 0
        self.single_calls = 0
        self.subscribed = threading.Event()
        self.lock = threading.Lock()
        v5 = protocol == mqtt.MQTTv5
        self.client = FastClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        self.client.on_publishes = self._bulk
        self.client.on_message = self._single
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=2)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.disconnected = threading.Event()
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 300
            self.client.connect(HOST, PORT, clean_start=False, properties=properties)
        else:
            self.client.connect(HOST, PORT)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    # Acked before recorded, so that once everything is recorded every ack is queued.
    def _bulk(self, publishes: list[tuple[str, bytes, int, int]]) -> None:
        self.client.ack_all([mid for _, _, mid, qos in publishes if qos == 1])
        with self.lock:
            self.bulk_calls += 1
            self.received += [(t, p, q) for t, p, _, q in publishes]

    def _single(self, client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.qos:
            client.ack(message.mid, message.qos)
        with self.lock:
            self.single_calls += 1
            self.received.append((message.topic, bytes(message.payload), message.qos))

    def wait_for(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """Disconnect once the broker has taken every ack: it handles a client's packets
        in order, so the PUBACK of a publish sent after them is the barrier (closing a
        socket that still has unread data resets it, and the broker may lose what it had
        not read yet)."""
        barrier = self.client.publish(f"t-fast-barrier/{uuid.uuid4().hex}", b"", qos=1)
        barrier.wait_for_publish(10)
        self.client.disconnect()
        assert self.disconnected.wait(10)
        self.client.loop_stop()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v3.1.1"])
def test_every_message_arrives_once_whole_and_in_order(protocol: int) -> None:
    root = f"t-fast-{uuid.uuid4().hex[:8]}"
    client_id = f"fast-{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    receiver = Receiver(protocol, client_id, f"{root}/#")
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    sender.max_inflight_messages_set(200)
    sender.connect(HOST, PORT)
    sender.loop_start()
    sent: list[tuple[str, bytes, int]] = []
    try:
        for i in range(3000):
            topic = f"{root}/v1/dev-{i % 7}/events/cam-{i % 3}"
            size = 200_000 if i % 500 == 17 else rng.randint(1, 3000)  # some span many reads
            payload = bytes(rng.getrandbits(8) for _ in range(min(size, 64))) * (size // 64 + 1)
            payload = payload[:size]
            qos = 2 if i % 250 == 5 else (0 if i % 10 == 3 else 1)
            properties = None
            if protocol == mqtt.MQTTv5 and i % 100 == 9:  # a user property: paho's decoder
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = ("k", str(i))
            info = sender.publish(topic, payload, qos=qos, properties=properties)
            sent.append((topic, payload, qos))
            if i % 200 == 199:
                info.wait_for_publish(10)
        receiver.wait_for(len(sent))
        assert len(receiver.received) == len(sent)
        # One publisher: the broker keeps the order of each QoS level (Mosquitto sends
        # QoS 0 past QoS 1 messages waiting for its inflight window, to paho's stock client
        # too; a QoS 2 message is handed over when its PUBREL arrives, so only its content
        # is compared).
        for qos in (0, 1):
            assert [m for m in receiver.received if m[2] == qos] == [m for m in sent if m[2] == qos]
        assert sorted(m for m in receiver.received if m[2] == 2) == sorted(
            m for m in sent if m[2] == 2
        )
        assert receiver.bulk_calls > 0, "the bulk path was not used"
        assert receiver.single_calls > 0, "paho's path was not used"
        receiver.stop()

        # Same session again: everything was acknowledged, so nothing comes back.
        again = Receiver(protocol, client_id, f"{root}/#")
        time.sleep(1.0)
        assert again.received == []
        again.stop()
    finally:
        sender.loop_stop()
        sender.disconnect()
