"""MQTT ingest: receive events, write them in batches, acknowledge only after commit.

paho-mqtt owns the network loop in its own thread; its callbacks only put messages on a
bounded asyncio queue. One consumer task validates, stores and acks in receive order,
so a hub killed at any point loses nothing: unacked messages are redelivered and the
idempotent insert ignores the ones it already has.

Besides events the hub takes each device's status, health and occupancy
(``cloud_hub.telemetry``) through the same queue and batches: stored in their own
transaction after the events, acknowledged with them, then pushed to Redis.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
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

from cloud_hub import metrics, telemetry
from cloud_hub.live_cache import LiveCache
from cloud_hub.settings import HubSettings
from cloud_hub.storage import Rejected, store_batch
from cloud_hub.validation import validate
from edge_agent.contract import Channel, PersonEvent
from edge_agent.mqtt_security import apply_credentials

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
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class MqttIngest:
    """Subscribes to every device's events and feeds them to the database in batches."""

    def __init__(self, settings: HubSettings, pool: asyncpg.Pool, cache: LiveCache) -> None:
        self._settings = settings
        self._pool = pool
        self._cache = cache
        self._queue: asyncio.Queue[Received] = asyncio.Queue(maxsize=settings.queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = self._make_client()
        self._session = 0
        self._session_lock = threading.Lock()
        self._stopping = threading.Event()
        self.connected = False
        self.db_ok = True
        self.last_commit: float | None = None

    def _make_client(self) -> mqtt.Client:
        s = self._settings
        v5 = s.mqtt_protocol == "5"
        client = mqtt.Client(
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
        assert self._loop is not None
        metrics.MESSAGES_RECEIVED.inc()
        item = Received(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._session)
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        # Blocking here is the backpressure: the broker stops sending past its inflight window.
        while not self._stopping.is_set():
            try:
                future.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                continue

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects on its own from then on."""
        self._loop = asyncio.get_running_loop()
        s = self._settings
        if s.mqtt_protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.mqtt_session_expiry_s
            props.ReceiveMaximum = min(s.queue_size, 65535)
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
        """Write batches forever; cancel to stop (an unfinished batch is simply not acked)."""
        while True:
            batch = await self._next_batch()
            await self.handle(batch)

    async def _next_batch(self) -> list[Received]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self._settings.batch_max_wait_s
        while len(batch) < self._settings.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        metrics.QUEUE_DEPTH.set(self._queue.qsize() + len(batch))
        return batch

    async def handle(self, batch: list[Received]) -> None:
        """Validate, store (retrying until the database takes it), ack, then update Redis."""
        events: list[PersonEvent] = []
        rejected: list[Rejected] = []
        other = telemetry.TelemetryBatch()
        root = self._settings.topic_root
        for item in batch:
            channel = telemetry.channel_of(item.topic, root)
            result: PersonEvent | telemetry.Telemetry | Rejected
            if channel in _TELEMETRY:
                assert channel is not None
                result = telemetry.validate(
                    channel, item.topic, item.payload, root, item.received_at
                )
            else:
                result = validate(item.topic, item.payload, root)
            if isinstance(result, Rejected):
                rejected.append(result)
            elif isinstance(result, PersonEvent):
                events.append(result)
            else:
                other.add(result)

        started = time.perf_counter()
        new_ids = await self._store_with_retry(events, rejected)
        if other:
            await self._retry(lambda: telemetry.store_telemetry(self._pool, other), other)
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
        metrics.EVENTS_STORED.inc(len(new_ids))
        metrics.EVENTS_DUPLICATE.inc(len(events) - len(new_ids))
        metrics.QUEUE_DEPTH.set(self._queue.qsize())
        await self._cache.push([e for e in events if e.event_id in new_ids])
        if other:
            await self._cache.push_telemetry(other)

    def _ack(self, batch: list[Received]) -> None:
        with self._session_lock:
            current = self._session
        for item in batch:
            # After a reconnect the broker redelivers these itself; an old mid would be wrong.
            if item.qos > 0 and item.session == current:
                self._client.ack(item.mid, item.qos)

    async def _store_with_retry(
        self, events: list[PersonEvent], rejected: list[Rejected]
    ) -> set[uuid.UUID]:
        delay = 0.5
        while True:
            try:
                new_ids = await store_batch(self._pool, events, rejected)
            except _POISON as exc:
                log.error("batch_has_bad_rows", error=str(exc), events=len(events))
                return await self._store_one_by_one(events, rejected)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                metrics.DB_ERRORS.inc()
                self.db_ok = False
                log.warning("db_write_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.db_retry_max_s)
                continue
            if not self.db_ok:
                log.info("db_write_recovered")
            self.db_ok = True
            return new_ids

    async def _retry(
        self, write: Callable[[], Awaitable[T]], what: telemetry.TelemetryBatch
    ) -> T | None:
        """Status, health and occupancy: retried like events while the database is down;
        a batch the database refuses as data is logged and dropped (it cannot succeed)."""
        delay = 0.5
        while True:
            try:
                result = await write()
            except _POISON as exc:
                log.error(
                    "telemetry_refused",
                    error=str(exc),
                    statuses=len(what.statuses),
                    health=len(what.health),
                    occupancy=len(what.occupancy),
                )
                return None
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                metrics.DB_ERRORS.inc()
                self.db_ok = False
                log.warning("db_write_failed", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.db_retry_max_s)
                continue
            self.db_ok = True
            return result

    async def _store_one_by_one(
        self, events: list[PersonEvent], rejected: list[Rejected]
    ) -> set[uuid.UUID]:
        """Isolate the rows the database refuses, so one bad event cannot block the rest."""
        new_ids: set[uuid.UUID] = set()
        for event in events:
            try:
                new_ids |= await store_batch(self._pool, [event], [])
            except _POISON as exc:
                topic = f"{self._settings.topic_root}/v1/{event.device_id}/events/{event.camera_id}"
                rejected.append(
                    Rejected(topic, "db_rejected", str(exc), event.model_dump_json().encode())
                )
        if rejected:
            await self._store_with_retry([], rejected)
        return new_ids
