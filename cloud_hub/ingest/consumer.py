"""MQTT ingest: receive events, write them in batches, acknowledge only after commit.

paho-mqtt owns the network loop in its own thread (``cloud_hub.ingest.mqtt_client``: paho with a
bulk receive path); its callbacks only append to a bounded inbox (a deque under a
condition, waking the event loop only when the consumer waits for it). One consumer task
validates, stores and acks in receive order, so a hub killed at any point loses nothing:
unacked messages are redelivered and the idempotent insert ignores the ones it already
has. While one batch is being written the consumer already collects and validates the
next; its write starts only once the previous batch has committed and been acknowledged,
so acks stay in arrival order. Redis is updated by a task of its own after each commit, in
commit order.

Besides events the hub takes each device's status, health and occupancy
(``cloud_hub.ingest.device_messages``) through the same queue and batches: stored in their own
transaction after the events, acknowledged with them, then pushed to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_hub import metrics
from cloud_hub.ingest import device_messages
from cloud_hub.ingest.mqtt_client import Publish, StockClient, client_class
from cloud_hub.ingest.validation import REASONS, validate
from cloud_hub.live.cache import LiveCache
from cloud_hub.settings import HubSettings
from cloud_hub.storage.event_writes import Rejected, store_batch
from edge_agent.contract import Channel, EventTopic, PersonEvent
from edge_agent.contract.broker_tls import apply_credentials

log = structlog.get_logger(__name__)

# Bad rows rather than a bad database: retrying the same batch would never succeed.
_POISON = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
_TELEMETRY = (Channel.STATUS, Channel.HEALTH, Channel.OCCUPANCY)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the network thread handed it over."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    session: int  # Acks are only valid on the connection that delivered the message.
    received_at: float = field(default_factory=time.time)  # a datetime only where needed


@dataclass(slots=True)
class _Prepared:
    """A validated batch, ready to be written."""

    batch: list[Received]
    events: list[PersonEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    other: device_messages.TelemetryBatch = field(default_factory=device_messages.TelemetryBatch)


def _first_of_each(events: list[PersonEvent], written: list[uuid.UUID]) -> list[PersonEvent]:
    """The events whose rows were written: for an id the batch carries twice, the first
    (the one the insert kept)."""
    wanted = set(written)
    fresh = []
    for event in events:
        if event.event_id in wanted:
            wanted.discard(event.event_id)
            fresh.append(event)
    return fresh


class MqttIngest:
    """Subscribes to every device's events and feeds them to the database in batches."""

    def __init__(self, settings: HubSettings, pool: asyncpg.Pool, cache: LiveCache) -> None:
        self._settings = settings
        self._bounds = settings.time_bounds
        self._pool = pool
        self._cache = cache
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
        self._channels: dict[str, Channel | None] = {}
        self._cache_queue: asyncio.Queue[
            tuple[list[PersonEvent], device_messages.TelemetryBatch]
        ] = asyncio.Queue(maxsize=4)
        self._cache_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = self._make_client()
        self._session = 0
        self._session_lock = threading.Lock()
        self._stopping = threading.Event()
        self.connected = False
        self.db_ok = True
        self.last_commit: float | None = None

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
        apply_credentials(
            client,
            username=s.mqtt_username,
            password=s.mqtt_password,
            tls=s.mqtt_tls,
            ca=s.mqtt_tls_ca,
            cert=s.mqtt_tls_cert,
            key=s.mqtt_tls_key,
        )
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
        self._cache_task = asyncio.create_task(self._cache_worker(), name="ingest-cache")
        writing: asyncio.Task[None] | None = None
        try:
            while True:
                batch = await self._next_batch()
                prepared = self._prepare(batch)
                if writing is not None:
                    await writing
                writing = asyncio.create_task(self._commit(prepared))
        finally:
            for task in (writing, self._cache_task):
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

    def _channel(self, topic: str) -> Channel | None:
        """The topic's channel, remembered per topic (a fleet reuses a bounded set)."""
        try:
            return self._channels[topic]
        except KeyError:
            pass
        if len(self._channels) >= 100_000:
            self._channels.clear()
        channel = self._channels[topic] = device_messages.channel_of(
            topic, self._settings.topic_root
        )
        return channel

    def _prepare(self, batch: list[Received]) -> _Prepared:
        """Validate every message of the batch (CPU only, nothing is written yet)."""
        prepared = _Prepared(batch)
        root = self._settings.topic_root
        for item in batch:
            result: PersonEvent | device_messages.Telemetry | Rejected
            try:
                result = self._validate(item, root)
            except Exception as exc:  # a validation bug: keep the message as a dead letter
                metrics.TASK_FAILURES.labels(task="ingest").inc()
                log.exception("validation_crashed", topic=item.topic[:200])
                result = Rejected(item.topic, "hub_error", repr(exc)[:1000], item.payload)
            if isinstance(result, PersonEvent):
                prepared.events.append(result)
            elif isinstance(result, Rejected):
                prepared.rejected.append(result)
            else:
                prepared.other.add(result)
        return prepared

    def _validate(
        self, item: Received, root: str
    ) -> PersonEvent | device_messages.Telemetry | Rejected:
        channel = self._channel(item.topic)
        if channel in _TELEMETRY:
            assert channel is not None
            received = datetime.fromtimestamp(item.received_at, UTC)
            return device_messages.validate(
                channel, item.topic, item.payload, root, received, self._bounds
            )
        return validate(item.topic, item.payload, root, self._bounds)

    async def handle(self, batch: list[Received]) -> None:
        """Validate, store (retrying until the database takes it), ack, then update Redis."""
        await self._commit(self._prepare(batch))

    async def _commit(self, prepared: _Prepared) -> None:
        """Store (retrying until the database takes it), ack, then hand over to Redis."""
        batch, events, rejected, other = (
            prepared.batch,
            prepared.events,
            prepared.rejected,
            prepared.other,
        )
        started = time.perf_counter()
        refused_before = len(rejected)
        new_ids = await self._store_with_retry(events, rejected)
        refused_by_db = len(rejected) - refused_before  # db_rejected, isolated row by row
        if other:
            await self._retry(lambda: device_messages.store_telemetry(self._pool, other), other)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(batch))
        self.last_commit = time.time()

        self._ack(batch)
        for bad in rejected:
            metrics.MESSAGES_REJECTED.labels(reason=bad.reason).inc()
            log.warning(
                "message_rejected",
                reason=bad.reason,
                topic=bad.topic[:200],
                head=bad.payload[:64].decode("utf-8", "replace"),
                size=len(bad.payload),
                detail=bad.detail[:300],
            )
        # Rows, not ids: a batch carrying one id twice writes one row and one duplicate.
        metrics.EVENTS_STORED.inc(len(new_ids))
        metrics.EVENTS_DUPLICATE.inc(len(events) - len(new_ids) - refused_by_db)
        metrics.QUEUE_DEPTH.set(len(self._inbox))
        fresh = _first_of_each(events, new_ids)
        if not (fresh or other):
            return
        if self._cache_task is None:  # not running (tests calling handle directly)
            await self._push_cache(fresh, other)
        else:
            await self._cache_queue.put((fresh, other))

    async def _push_cache(
        self, events: list[PersonEvent], other: device_messages.TelemetryBatch
    ) -> None:
        await self._cache.push(events)
        if other:
            await self._cache.push_telemetry(other)

    async def _cache_worker(self) -> None:
        """Redis after the commits, in commit order, without holding up the next write."""
        while True:
            events, other = await self._cache_queue.get()
            try:
                await self._push_cache(events, other)
            except Exception:  # a cache bug must not stop ingest; LiveCache logs Redis errors
                metrics.TASK_FAILURES.labels(task="live_cache").inc()
                log.exception("live_cache_update_failed")
            finally:
                self._cache_queue.task_done()

    def _ack(self, batch: list[Received]) -> None:
        with self._session_lock:
            current = self._session
        # After a reconnect the broker redelivers these itself; an old mid would be wrong.
        self._client.ack_all([i.mid for i in batch if i.qos == 1 and i.session == current])

    async def _store_with_retry(
        self, events: list[PersonEvent], rejected: list[Rejected]
    ) -> list[uuid.UUID]:
        try:
            return await self._until_stored(lambda: store_batch(self._pool, events, rejected))
        except _POISON as exc:
            log.error("batch_has_bad_rows", error=str(exc), events=len(events))
            return await self._store_one_by_one(events, rejected)

    async def _retry(
        self, write: Callable[[], Awaitable[T]], what: device_messages.TelemetryBatch
    ) -> T | None:
        """Status, health and occupancy: retried like events while the database is down;
        a batch the database refuses as data is logged and dropped (it cannot succeed)."""
        try:
            return await self._until_stored(write)
        except _POISON as exc:
            log.error(
                "telemetry_refused",
                error=str(exc),
                statuses=len(what.statuses),
                health=len(what.health),
                occupancy=len(what.occupancy),
            )
            return None

    async def _until_stored(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run one write transaction until it commits, backing off while it fails.

        Rows the database refuses as data (``_POISON``) are raised to the caller: retrying
        them cannot succeed. Anything else is retried, since the messages are not acked
        until it commits: a database away (logged as a warning) or an error this code did
        not foresee (logged with its traceback and counted), so ingest never dies silently
        and loses nothing; it stalls, loudly, until the cause is gone.
        """
        delay = 0.5
        while True:
            try:
                result = await write()
            except _POISON:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                metrics.DB_ERRORS.inc()
                self.db_ok = False
                log.warning("db_write_failed", error=str(exc), retry_in_s=delay)
            except Exception:
                metrics.TASK_FAILURES.labels(task="ingest").inc()
                log.exception("ingest_write_crashed", retry_in_s=delay)
            else:
                if not self.db_ok:
                    log.info("db_write_recovered")
                self.db_ok = True
                return result
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.db_retry_max_s)

    async def _store_one_by_one(
        self, events: list[PersonEvent], rejected: list[Rejected]
    ) -> list[uuid.UUID]:
        """Isolate the rows the database refuses, so one bad event cannot block the rest."""
        new_ids: list[uuid.UUID] = []
        for event in events:
            try:
                new_ids += await store_batch(self._pool, [event], [])
            except _POISON as exc:
                topic = str(EventTopic(self._settings.topic_root, event.device_id, event.camera_id))
                rejected.append(
                    Rejected(topic, "db_rejected", str(exc), event.model_dump_json().encode())
                )
        if rejected:
            await self._store_with_retry([], rejected)
        return new_ids
