"""The hub's MQTT client: paho's, with a receive path fit for tens of thousands of
messages a second, and acks written a batch at a time.

paho handles one packet per ``select`` and reads it a few bytes per ``recv``, builds an
MQTT 5 ``Properties`` object for every message and queues every PUBACK as a packet of its
own with a wake-up of the network thread: fine for a device, most of a hub's CPU at fleet
rates. ``FastClient`` keeps paho for the protocol (connecting, subscribing, keepalive,
reconnecting, anything unusual) and changes only the common case:

- the socket is read 64 KiB at a time, and paho reads its packets out of that buffer;
- complete QoS 0/1 PUBLISH packets without properties (every contract message) at the
  head of the buffer are decoded in one pass and handed to ``on_publishes`` as one list;
  a packet split across reads, a QoS 2 or a property-carrying PUBLISH, and every other
  packet go through paho's own code;
- ``ack_all`` writes the PUBACKs of a batch as one packet.

These overrides use private paho methods (paho-mqtt 2.1-2.2). ``client_class`` returns
the stock client, slower but correct, when this paho lacks them; a test fails then, so
an upgrade that loses the fast path is noticed.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

log = structlog.get_logger(__name__)

# topic, payload, packet id, QoS
Publish = tuple[str, bytes, int, int]
OnPublishes = Callable[[list[Publish]], None]

_PUBACK = struct.Struct("!BBH")
_PUBLISH = 0x30
_MAX_LENGTH_BYTES = 4  # MQTT's remaining length takes at most four bytes


class StockClient(mqtt.Client):
    """paho's client as it is, with the ingest's batch ack."""

    on_publishes: OnPublishes | None = None  # only FastClient calls it; others use on_message

    def ack_all(self, mids: list[int]) -> None:
        """PUBACK every QoS 1 message id, in order."""
        for mid in mids:
            self.ack(mid, 1)


class FastClient(StockClient):
    """See the module docstring."""

    _rbuf: bytes = b""
    _rpos: int = 0
    _rsock: object = None

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rsock is not self._sock:  # a new connection: nothing buffered is valid
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
        if self._rpos >= len(self._rbuf):
            data: bytes = super()._sock_recv(65536)
            if not data:
                return data
            self._rbuf, self._rpos = data, 0
        end = self._rpos + bufsize
        chunk = self._rbuf[self._rpos : end]
        self._rpos = end
        return chunk

    def _take_publishes(self) -> None:
        """Decode the complete fast-path PUBLISH packets at the head of the buffer and hand
        them over as one list; stop at anything else, which paho then reads."""
        callback = self.on_publishes
        if callback is None or self._in_packet["command"] != 0 or self._rsock is not self._sock:
            return  # no bulk consumer, paho is inside a packet, or the buffer is stale
        buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        v5 = self._protocol == mqtt.MQTTv5
        out: list[Publish] = []
        while pos < end:
            command = buf[pos]
            qos = (command >> 1) & 0x03
            if command & 0xF0 != _PUBLISH or qos > 1:
                break
            length, shift, i = 0, 0, pos + 1
            while i < end and i - pos <= _MAX_LENGTH_BYTES:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                break  # the length is incomplete (or malformed: paho reports that)
            body_end = i + length
            if body_end > end or length < 2:
                break  # split across reads, or too short: paho's path
            topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
            p, mid = topic_end, 0
            if p + 2 * qos > body_end:
                break
            if qos:
                mid = (buf[p] << 8) | buf[p + 1]
                p += 2
            if v5:
                if p >= body_end or buf[p] != 0:
                    break  # properties (or a topic alias): paho's decoder
                p += 1
            if topic_end == i + 2 or p > body_end:
                break
            out.append(
                (buf[i + 2 : topic_end].decode("utf-8", "replace"), buf[p:body_end], mid, qos)
            )
            pos = body_end
        if out:
            self._rpos = pos
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
            with self._in_callback_mutex:
                callback(out)

    def _handle_publish(self) -> MQTTErrorCode:
        """A PUBLISH that paho read (split across reads): the same decoding for one packet,
        still skipping paho's ``Properties`` object when it has none."""
        command: int = self._in_packet["command"]
        packet: bytearray = self._in_packet["packet"]
        qos = (command & 0x06) >> 1
        if qos > 1 or len(packet) < 2:
            return self._full_publish()
        topic_len = (packet[0] << 8) | packet[1]
        pos = 2 + topic_len
        mid = 0
        if qos:
            if len(packet) < pos + 2:
                return self._full_publish()
            mid = (packet[pos] << 8) | packet[pos + 1]
            pos += 2
        if self._protocol == mqtt.MQTTv5:
            if len(packet) <= pos or packet[pos] != 0:  # properties present
                return self._full_publish()
            pos += 1
        if topic_len == 0:
            return self._full_publish()
        message = mqtt.MQTTMessage(mid=mid, topic=bytes(packet[2 : 2 + topic_len]))
        message.dup = bool(command & 0x08)
        message.qos = qos
        message.retain = bool(command & 0x01)
        message.payload = bytes(packet[pos:])
        message.timestamp = time.monotonic()
        # The hub registers no per-topic callbacks (message_callback_add), so paho's topic
        # matching for them is skipped; on_message gets every message.
        callback = self.on_message
        if callback is not None:
            with self._in_callback_mutex:
                callback(self, self._userdata, message)
        if qos == 1 and not self._manual_ack:
            rc: MQTTErrorCode = self._send_puback(mid)
            return rc
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _full_publish(self) -> MQTTErrorCode:
        rc: MQTTErrorCode = super()._handle_publish()
        return rc

    def ack_all(self, mids: list[int]) -> None:
        """PUBACK every QoS 1 message id, in order, as one write: ``ack()`` queues one
        4-byte packet per message, each with a wake-up byte to the network thread and a
        ``send`` of its own. Success acks carry no reason code, the same bytes in MQTT 3.1.1
        and 5 (a short PUBACK means success)."""
        if mids:
            packet = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])
            self._packet_queue(mqtt.PUBACK, packet, 0, 0)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        while True:  # until the socket has nothing more (the broker's window bounds this)
            self._take_publishes()
            rc: MQTTErrorCode = self._packet_read()
            if rc > 0:
                handled: MQTTErrorCode = self._loop_rc_handle(rc)
                return handled
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            # AGAIN with bytes still buffered (paho gives up on a huge packet after 100
            # reads): go on, as select() cannot see what this buffer holds.
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN and self._rpos >= len(self._rbuf):
                return MQTTErrorCode.MQTT_ERR_SUCCESS


# What FastClient builds on (paho-mqtt 2.1-2.2).
_PAHO_INTERNALS = (
    "_sock_recv",
    "_handle_publish",
    "_packet_read",
    "_loop_rc_handle",
    "_packet_queue",
    "_send_puback",
    "_in_callback_mutex",
    "_msgtime_mutex",
    "_in_packet",
    "_sock",
    "_protocol",
    "_manual_ack",
)


def client_class() -> type[StockClient]:
    """The fast client when this paho has what it overrides, else the stock one."""
    probe = StockClient(CallbackAPIVersion.VERSION2)
    missing = [name for name in _PAHO_INTERNALS if not hasattr(probe, name)]
    if not missing:
        return FastClient
    log.warning("paho_fast_path_off", missing=missing)
    return StockClient
