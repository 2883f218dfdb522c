"""Publishes person events from the durable outbox over MQTT (QoS 1), MQTT 5 or 3.1.1.

Delivery, end to end:

* ``publish`` (camera threads) only commits the event to the :class:`Outbox` and wakes
  the pump; it never touches paho, so a camera never waits on the network.
* The *pump* thread hands at most ``inflight`` outbox entries to paho at a time, oldest
  first, and refills the window as PUBACKs arrive. An outage of an hour with thousands
  of events therefore holds ``inflight`` messages in paho's memory, the rest on disk,
  and order is kept (paho sends its queue in order and resends it in order).
* ``on_publish`` (paho's network thread) maps the PUBACK's message id back to the outbox
  entry; the pump deletes acknowledged entries in batches.
* An MQTT 5 broker answers a PUBACK with "no matching subscribers" (0x10) when nobody
  (no hub) subscribes to the topic, for example right after a broker restart that lost
  the hub's shared subscription. Such an event is *not* deleted: it stays in the outbox
  and is sent again after a backoff (1 s doubling to 30 s), and it keeps its place in
  the in-flight window, so a missing hub stops the flow instead of draining the outbox
  into the void. (MQTT 3.1.1 has no reason codes; there the broker's PUBACK is final.)
* After a reconnect paho resends the messages it holds (same ids, DUP set); the pump
  hands nothing twice. After a restart the outbox replays every entry still stored.
  Either way a message whose PUBACK was lost is sent again: at most ``inflight``
  duplicates per interruption, which the hub's ``ON CONFLICT (event_id) DO NOTHING``
  absorbs.

Besides events the publisher carries the device's retained status (and its last will),
QoS 0 telemetry (health, occupancy) while connected, the retained config
subscription, and for edge_agent/device/home_assistant.py more retained messages
(``publish_retained``), subscriptions (``subscribe``) and connect listeners.

Locking rule: paho calls ``on_publish`` while holding its own mutex, which
``client.publish`` also takes, so no lock of ours is ever held across a paho call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttConfig
from edge_agent.contract import EventTopic, PersonEvent
from edge_agent.delivery.mqtt_security import configure_client
from edge_agent.delivery.outbox import Outbox

log = structlog.get_logger(__name__)

DEFAULT_INFLIGHT = 20
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code
UNHEARD_RETRY_S = (1.0, 30.0)  # first and longest wait before resending an unheard event
_STATUS = -1  # the value of an in-flight status message in ``_inflight`` (not an entry)

StatusBuilder = Callable[[bool], bytes]  # online? -> DeviceStatus JSON
ConfigHandler = Callable[[bytes], None]


class MqttPublisher:
    """One connection per agent; thread-safe ``publish`` from every camera thread."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        outbox: Outbox | None = None,
        *,
        inflight: int = DEFAULT_INFLIGHT,
    ) -> None:
        self.config = config
        self.outbox = outbox if outbox is not None else Outbox(None)
        self.inflight_window = inflight
        protocol = mqtt.MQTTv5 if config.protocol == "5" else mqtt.MQTTv311
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        configure_client(self._client, config)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Room for the event window plus status messages; paho never queues beyond it.
        self._client.max_inflight_messages_set(inflight + 4)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # mid -> outbox entry id (or _STATUS) for QoS 1 messages paho holds. Tracked from
        # PUBACKs rather than MQTTMessageInfo.is_published(), which raises for messages
        # queued while offline even after they were delivered.
        self._inflight: dict[int, int] = {}
        self._acked_early: set[int] = set()  # PUBACK seen before publish() returned
        self._ephemeral: dict[int, int] = {}  # QoS 0 mid -> connection generation
        self._generation = 0
        self._acked_entries: list[int] = []
        # Outbox ids the broker accepted with "no matching subscribers": resend at the time.
        self._unheard: dict[int, float] = {}
        self._unheard_delay = UNHEARD_RETRY_S[0]
        self._unheard_bump_at = 0.0
        self._cursor = 0  # highest outbox id handed to paho
        self._status_due = False
        self._work = True  # something for the pump: a new entry, an ack, a connect
        self._stopping = False
        self._status: tuple[str, StatusBuilder] | None = None
        self._status_ready: Callable[[], bool] = lambda: True
        self._last_will = b""
        self._config_sub: tuple[str, ConfigHandler] | None = None
        self._subscriptions: dict[str, ConfigHandler] = {}  # more topics -> handler
        self._connect_listeners: list[Callable[[], None]] = []
        self._pump = threading.Thread(target=self._run_pump, name="mqtt-pump", daemon=True)
        self.connected = threading.Event()
        self._closing = False
        self.published = 0
        self.max_inflight_seen = 0

    # --- set-up (before start) -------------------------------------------------------

    def set_status(
        self,
        topic: str,
        build: StatusBuilder,
        last_will: bytes,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        """Keep ``topic`` retained: ``build(True)`` on every connect and change, the
        ``last_will`` if the connection dies, ``build(False)`` on a clean close.

        An online status waits while ``ready()`` is false: a status stamped by a clock that
        was never set would only be dead-lettered by the hub (``bad_time``)."""
        self._status = (topic, build)
        self._status_ready = ready
        self._last_will = last_will
        self._client.will_set(topic, last_will, qos=1, retain=True)

    def subscribe_config(self, topic: str, handler: ConfigHandler) -> None:
        """Subscribe to the retained desired config on every connect; ``handler`` gets
        each payload on paho's thread (it must be quick and must not wait on paho)."""
        self._config_sub = (topic, handler)

    def subscribe(self, topic: str, handler: ConfigHandler) -> None:
        """Subscribe to ``topic`` (QoS 1, no wildcards) on every connect; ``handler`` as for
        :meth:`subscribe_config`."""
        self._subscriptions[topic] = handler

    def on_connected(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on paho's thread: quick, no paho calls) after every connect."""
        self._connect_listeners.append(listener)

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect in the background; wait up to ``timeout_s`` for the first CONNACK.

        Not connecting in time is logged, not fatal: events wait in the outbox until
        the broker is back, which is what a camera device on a flaky network needs.
        """
        cfg = self.config
        self._pump.start()
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        self._client.loop_start()
        if not self.connected.wait(timeout_s):
            log.warning("mqtt_not_connected_yet", host=cfg.host, port=cfg.port)

    # --- any thread --------------------------------------------------------------------

    def publish(self, event: PersonEvent) -> None:
        """Commit one event to the outbox; the pump sends it with QoS 1."""
        topic = str(EventTopic(self.config.topic_root, event.device_id, event.camera_id))
        self.outbox.append(topic, event.model_dump_json().encode())
        with self._wake:
            self.published += 1
            self._work = True
            self._wake.notify()

    def status_changed(self) -> None:
        """Publish the status again soon (a camera changed state, a config was applied)."""
        with self._wake:
            self._status_due = self._work = True
            self._wake.notify()

    def send(self, topic: str, payload: bytes) -> bool:
        """QoS 0 telemetry, only while connected (stale health is not worth queueing)."""
        if not self.connected.is_set():
            return False
        with self._lock:
            generation = self._generation
        info = self._client.publish(topic, payload, qos=0)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        with self._lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._ephemeral[info.mid] = generation
        return True

    def publish_retained(self, topic: str, payload: bytes) -> bool:
        """A retained QoS 1 message now, while connected (False when not); :meth:`close`
        waits for its PUBACK like the status's, :meth:`retained_pending` tells."""
        if not self.connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=1, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self._track(info.mid, _STATUS)
        return True

    def retained_pending(self) -> bool:
        """Whether a retained message (status or :meth:`publish_retained`) awaits its PUBACK."""
        return self._status_pending()

    def unacknowledged(self) -> int:
        """Events in the outbox the broker has not acknowledged yet."""
        return self.outbox.depth()

    def in_flight(self) -> int:
        """Outbox entries handed to paho and not yet acknowledged."""
        with self._lock:
            return sum(1 for v in self._inflight.values() if v != _STATUS)

    def close(self, timeout_s: float = 30.0) -> int:
        """Wait for acknowledgements, publish the offline status, disconnect; returns how
        many events stay in the outbox (they are sent on the next start)."""
        deadline = time.monotonic() + timeout_s
        while self.unacknowledged() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.unacknowledged()
        if left:
            log.warning("mqtt_unacknowledged_on_close", count=left, kept_in_outbox=True)
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._pump.join(timeout=5)
        if self._status is not None and self.connected.is_set():
            topic, build = self._status
            # Without a set clock, the last will's words: offline, no time.
            goodbye = build(False) if self._status_ready() else self._last_will
            info = self._client.publish(topic, goodbye, qos=1, retain=True)
            self._track(info.mid, _STATUS)
            wait_until = time.monotonic() + 3.0
            while self._status_pending() and time.monotonic() < wait_until:
                time.sleep(0.02)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self._delete_acked()
        self.outbox.close()
        return left

    # --- the pump ----------------------------------------------------------------------

    def _run_pump(self) -> None:
        while True:
            with self._wake:
                if not self._work and not self._stopping:
                    self._wake.wait(timeout=1.0)
                if self._stopping:
                    return
                self._work = False
                status_due, self._status_due = self._status_due, False
                rows_in_flight = sum(1 for v in self._inflight.values() if v != _STATUS)
                rows_in_flight += len(self._unheard)
                now = time.monotonic()
                due = [entry_id for entry_id, at in self._unheard.items() if at <= now]
                for entry_id in due:
                    del self._unheard[entry_id]
            try:
                self._delete_acked()
                if due and self.connected.is_set():
                    for again in self.outbox.read_ids(due):
                        info = self._client.publish(again.topic, again.payload, qos=1)
                        self._track(info.mid, again.id)
                elif due:  # offline: paho will not take them now; try again later
                    with self._lock:
                        self._unheard.update(dict.fromkeys(due, now + self._unheard_delay))
                if status_due and not self._status_ready():
                    with self._wake:  # look again at the next turn (at most a second away)
                        self._status_due = True
                elif status_due and self._status is not None and self.connected.is_set():
                    topic, build = self._status
                    info = self._client.publish(topic, build(True), qos=1, retain=True)
                    self._track(info.mid, _STATUS)
                free = self.inflight_window - rows_in_flight
                if free > 0:
                    self._hand_over(free)
            except Exception:
                log.exception("mqtt_pump_failed")
                time.sleep(1.0)

    def _hand_over(self, count: int) -> None:
        """Give paho the next ``count`` outbox entries after the cursor, in order."""
        entries = self.outbox.read_after(self._cursor, count)
        for entry in entries:
            info = self._client.publish(entry.topic, entry.payload, qos=1)
            self._cursor = entry.id
            self._track(info.mid, entry.id)
        if entries:
            with self._lock:
                rows = sum(1 for v in self._inflight.values() if v != _STATUS)
                self.max_inflight_seen = max(self.max_inflight_seen, rows)
                more = len(entries) == count
            if more:
                self._poke()

    def _poke(self) -> None:
        with self._wake:
            self._work = True
            self._wake.notify()

    def _track(self, mid: int, value: int) -> None:
        """Remember what ``mid`` carries, unless its PUBACK already came."""
        with self._lock:
            if mid in self._acked_early:
                self._acked_early.discard(mid)
                if value != _STATUS:
                    self._acked_entries.append(value)
                    self._work = True
                    self._wake.notify()
            else:
                self._inflight[mid] = value

    def _status_pending(self) -> bool:
        with self._lock:
            return _STATUS in self._inflight.values()

    def _delete_acked(self) -> None:
        with self._lock:
            done, self._acked_entries = self._acked_entries, []
        if done:
            self.outbox.delete(done)

    # --- paho's network thread -----------------------------------------------------------

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        with self._wake:
            value = self._inflight.pop(mid, None)
            if value is not None:
                if value != _STATUS and reason.value == NO_MATCHING_SUBSCRIBERS:
                    now = time.monotonic()
                    self._unheard[value] = now + self._unheard_delay
                    if now >= self._unheard_bump_at:  # back off once per round, not per event
                        log.warning("mqtt_no_subscriber_for_events", retry_s=self._unheard_delay)
                        self._unheard_bump_at = now + self._unheard_delay
                        self._unheard_delay = min(UNHEARD_RETRY_S[1], self._unheard_delay * 2)
                elif value != _STATUS:
                    self._acked_entries.append(value)
                    self._unheard_delay, self._unheard_bump_at = UNHEARD_RETRY_S[0], 0.0
                self._work = True
                self._wake.notify()
            elif self._ephemeral.get(mid) == self._generation:
                del self._ephemeral[mid]
            else:
                self._acked_early.add(mid)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self._config_sub is not None and msg.topic == self._config_sub[0]:
            try:
                self._config_sub[1](bytes(msg.payload))
            except Exception:
                log.exception("config_handler_failed")
        elif (handler := self._subscriptions.get(msg.topic)) is not None:
            try:
                handler(bytes(msg.payload))
            except Exception:
                log.exception("message_handler_failed", topic=msg.topic)

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
        if self._config_sub is not None:
            client.subscribe(self._config_sub[0], qos=1)
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        self.connected.set()
        with self._wake:
            # QoS 0 packets of the last connection were dropped with it.
            self._generation += 1
            self._ephemeral.clear()
            self._status_due = self._work = True
            self._wake.notify()
        for listener in self._connect_listeners:
            listener()

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
