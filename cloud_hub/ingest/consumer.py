"""MQTT ingest: receive events, write them in batches, acknowledge only after commit.

paho-mqtt owns the network loop in its own thread (``cloud_hub.ingest.mqtt_client``: paho with a
bulk receive path); its callbacks only append to a bounded inbox (a deque under a
condition, waking the event loop only when the consumer waits for it). One consumer task
validates (``cloud_hub.ingest.validation``), stores and acks (``cloud_hub.ingest.writer``)
in receive order, so a hub killed at any point loses nothing: unacked messages are
redelivered and the idempotent insert ignores the ones it already has. While one batch is
being written the consumer already collects and validates the next; its write starts only
once the previous batch has committed and been acknowledged, so acks stay in arrival
order. Redis is updated by a task of its own after each commit, in commit order.

Besides events the hub takes each device's status, health and occupancy
(``cloud_hub.ingest.device_messages``) through the same queue and batches: stored in their own
transaction after the events, acknowledged with them, then pushed to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_hub import metrics
from cloud_hub.ingest.batch import PreparedBatch, Received
from cloud_hub.ingest.mqtt_client import Publish, StockClient, client_class
from cloud_hub.ingest.validation import REASONS, MessageValidator
from cloud_hub.ingest.writer import BatchWriter
from cloud_hub.live.cache import LiveCache
from cloud_hub.received import HealthSample, Rejected, StatusUpdate
from cloud_hub.settings import HubSettings
from edge_agent.contract import Occupancy, PersonEvent
from edge_agent.contract.broker_tls import apply_credentials

log = structlog.get_logger(__name__)


class MqttIngest:
    """Subscribes to every device's events and feeds them to the database in batches."""

    def __init__(self, settings: HubSettings, pool: asyncpg.Pool, cache: LiveCache) -> None:
        self._settings = settings
        for reason in REASONS:  # every reason on /metrics from the start, at 0
            metrics.MESSAGES_REJECTED.labels(reason=reason)
        for task in ("ingest", "live_cache", "rollups"):
            metrics.TASK_FAILURES.labels(task=task)
        # The inbox: appended by paho's thread, drained by the consumer. Bounded: a full
        # inbox blocks paho's thread (the broker then stops at its inflight window), which
        # ``_inbox_changed`` wakes when the consumer takes a batch; ``_wakeup`` is set from
        # paho's thread only while the consumer waits.
        self._inbox: deque[Received] = deque()
        self._inbox_changed = threading.Condition()
        self._consumer_waiting = False
        self._wakeup = asyncio.Event()
        self._validator = MessageValidator(settings.topic_root, settings.time_bounds)
        self._writer = BatchWriter(settings, pool, cache, self._ack, lambda: len(self._inbox))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = self._make_client()
        self._session = 0
        self._session_lock = threading.Lock()
        self._stopping = threading.Event()
        self.connected = False

    @property
    def db_ok(self) -> bool:
        """Whether the last database write went through (False while writes are retried)."""
        return self._writer.db_ok

    @property
    def last_commit(self) -> float | None:
        """When the last batch committed (``time.time()``), None before the first."""
        return self._writer.last_commit

    def _make_client(self) -> StockClient:
        s = self._settings
        v5 = s.mqtt_protocol == "5"
        client = client_class()(
            CallbackAPIVersion.VERSION2,
            client_id=s.mqtt_client_id,
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=True,
        )
        apply_credentials(client, s.broker_credentials())
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publishes = self._on_publishes
        return client

    # --- network thread: thin callbacks -------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt_connect_refused", reason=str(reason))
            return
        with self._session_lock:
            self._session += 1
        filters = [self._settings.event_filter, *self._settings.telemetry_filters]
        client.subscribe([(f, 1) for f in filters])
        self.connected = True
        metrics.MQTT_CONNECTED.set(1)
        log.info("mqtt_connected", subscriptions=filters)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self.connected = False
        metrics.MQTT_CONNECTED.set(0)
        if not self._stopping.is_set():
            log.warning("mqtt_disconnected", reason=str(reason))

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._put([Received(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._session)])

    def _on_publishes(self, publishes: list[Publish]) -> None:
        """The fast client's bulk hand-over: every message decoded from one read."""
        session, now = self._session, time.time()
        self._put([Received(t, p, mid, qos, session, now) for t, p, mid, qos in publishes])

    def _put(self, items: list[Received]) -> None:
        # Blocking here is the backpressure: the broker stops sending past its inflight
        # window. One read's messages go in together (at most 64 KiB over the bound).
        with self._inbox_changed:
            while len(self._inbox) >= self._settings.queue_size:
                if self._stopping.is_set():
                    return
                self._inbox_changed.wait(1.0)
            self._inbox.extend(items)
            wake = self._consumer_waiting
            self._consumer_waiting = False
        if wake:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects on its own from then on."""
        self._loop = asyncio.get_running_loop()
        s = self._settings
        if s.mqtt_protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.mqtt_session_expiry_s
            props.ReceiveMaximum = min(s.queue_size, 65535)
            # The broker drops (never sends) a bigger message: only too_large could come of it.
            props.MaximumPacketSize = s.mqtt_max_packet_bytes
            self._client.connect_async(
                s.mqtt_host, s.mqtt_port, s.mqtt_keepalive_s, clean_start=False, properties=props
            )
        else:
            self._client.connect_async(s.mqtt_host, s.mqtt_port, s.mqtt_keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; unacked messages stay with the broker for the next run."""
        self._stopping.set()
        self._client.disconnect()
        self._client.loop_stop()
        self.connected = False
        metrics.MQTT_CONNECTED.set(0)

    # --- consumer: batch, store, ack --------------------------------------------------

    async def run(self) -> None:
        """Write batches forever; cancel to stop (an unfinished batch is simply not acked).

        Two batches overlap at most: the next one is collected and validated while the
        previous one is written, and is written only after that one committed and was
        acknowledged."""
        self._writer.start()
        writing: asyncio.Task[None] | None = None
        try:
            while True:
                batch = await self._next_batch()
                prepared = self._prepare(batch)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(self._writer.commit(prepared))
        finally:
            for task in (writing, self._writer.cache_task):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def _take(self, limit: int) -> list[Received]:
        inbox = self._inbox
        with self._inbox_changed:
            taken = [inbox.popleft() for _ in range(min(limit, len(inbox)))]
            if taken:
                self._inbox_changed.notify()
        if taken:
            metrics.MESSAGES_RECEIVED.inc(len(taken))
        return taken

    async def _wait_for_items(self, timeout: float | None) -> None:
        with self._inbox_changed:
            if self._inbox:
                return
            self._consumer_waiting = True
            self._wakeup.clear()
        try:
            if timeout is None:
                await self._wakeup.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
        finally:
            with self._inbox_changed:
                self._consumer_waiting = False

    async def _next_batch(self) -> list[Received]:
        size = self._settings.batch_size
        batch = self._take(size)
        while not batch:
            await self._wait_for_items(None)
            batch = self._take(size)
        deadline = time.monotonic() + self._settings.batch_max_wait_s
        while len(batch) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._wait_for_items(remaining)
            batch.extend(self._take(size - len(batch)))
        metrics.QUEUE_DEPTH.set(len(self._inbox) + len(batch))
        return batch

    def _prepare(self, batch: list[Received]) -> PreparedBatch:
        """Validate every message of the batch (CPU only, nothing is written yet)."""
        prepared = PreparedBatch(batch)
        events, rejected, other = prepared.events, prepared.rejected, prepared.other
        validate = self._validator.validate
        for item in batch:
            result: PersonEvent | StatusUpdate | HealthSample | Occupancy | Rejected
            try:
                result = validate(item.topic, item.payload, item.received_at)
            except Exception as exc:  # a validation bug: keep the message as a dead letter
                metrics.TASK_FAILURES.labels(task="ingest").inc()
                log.exception("validation_crashed", topic=item.topic[:200])
                result = Rejected(item.topic, "hub_error", repr(exc)[:1000], item.payload)
            if isinstance(result, PersonEvent):
                events.append(result)
            elif isinstance(result, Rejected):
                rejected.append(result)
            elif isinstance(result, StatusUpdate):
                other.statuses.append(result)
            elif isinstance(result, HealthSample):
                other.health.append(result)
            else:
                other.occupancy.append(result)
        return prepared

    async def handle(self, batch: list[Received]) -> None:
        """Validate, store (retrying until the database takes it), ack, then update Redis."""
        await self._writer.commit(self._prepare(batch))

    def _ack(self, batch: list[Received]) -> None:
        with self._session_lock:
            current = self._session
        # After a reconnect the broker redelivers these itself; an old mid would be wrong.
        self._client.ack_all([i.mid for i in batch if i.qos == 1 and i.session == current])
