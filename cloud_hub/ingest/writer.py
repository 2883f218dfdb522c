"""Writing a validated batch: store, acknowledge, count, then hand over to Redis.

Events and their dead letters go in one transaction (``cloud_hub.storage.event_writes``);
status, health and occupancy (``cloud_hub.ingest.device_messages``) in their own
transaction after the events. Each write is retried with backoff until the database takes
it (``cloud_hub.retry``): nothing is acknowledged before it committed, so a hub killed at
any point loses nothing (unacked messages are redelivered and the idempotent insert
ignores the ones it already has). Rows the database refuses as data are isolated one by
one and kept as dead letters. Redis is updated by a task of its own after each commit, in
commit order, without holding up the next write.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import structlog

from cloud_hub import metrics
from cloud_hub.ingest.batch import PreparedBatch, Received
from cloud_hub.live.cache import LiveCache
from cloud_hub.received import Rejected, TelemetryBatch
from cloud_hub.retry import retry_with_backoff
from cloud_hub.settings import HubSettings
from cloud_hub.storage.device_writes import store_telemetry
from cloud_hub.storage.event_writes import store_batch
from edge_agent.contract import EventTopic, PersonEvent

log = structlog.get_logger(__name__)

# Bad rows rather than a bad database: retrying the same batch would never succeed.
_POISON = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
# The database away or busy: expected now and then, retried without a traceback.
_DB_AWAY = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
T = TypeVar("T")


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


class BatchWriter:
    """Stores prepared batches one at a time, acks them, and keeps Redis in commit order.

    ``ack`` acknowledges a stored batch to the broker; ``queue_depth`` says how many
    messages wait behind it (for ``hub_ingest_queue_depth``).
    """

    def __init__(
        self,
        settings: HubSettings,
        pool: asyncpg.Pool,
        cache: LiveCache,
        ack: Callable[[list[Received]], None],
        queue_depth: Callable[[], int],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._cache = cache
        self._ack = ack
        self._queue_depth = queue_depth
        self._cache_queue: asyncio.Queue[tuple[list[PersonEvent], TelemetryBatch]] = asyncio.Queue(
            maxsize=4
        )
        self._cache_task: asyncio.Task[None] | None = None
        self.db_ok = True
        self.last_commit: float | None = None
        metrics.LAST_COMMIT.set_to_current_time()

    def start(self) -> None:
        """Start the task that updates Redis after each commit."""
        self._cache_task = asyncio.create_task(self._cache_worker(), name="ingest-cache")

    @property
    def cache_task(self) -> asyncio.Task[None] | None:
        """The Redis task (None before :meth:`start`)."""
        return self._cache_task

    async def commit(self, prepared: PreparedBatch) -> None:
        """Store (retrying until the database takes it), ack, then hand over to Redis."""
        batch, events, rejected, other = (
            prepared.batch,
            prepared.events,
            prepared.rejected,
            prepared.other,
        )
        started = time.perf_counter()
        refused_before = len(rejected)
        new_ids = await self._store_events(events, rejected)
        refused_by_db = len(rejected) - refused_before  # db_rejected, isolated row by row
        if other:
            await self._store_telemetry(other)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(batch))
        self.last_commit = time.time()
        metrics.LAST_COMMIT.set(self.last_commit)
        oldest = min((item.received_at for item in batch), default=self.last_commit)
        metrics.INGEST_LAG.set(self.last_commit - oldest)

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
        metrics.QUEUE_DEPTH.set(self._queue_depth())
        fresh = _first_of_each(events, new_ids)
        if not (fresh or other):
            return
        if self._cache_task is None:  # not running (tests calling handle directly)
            await self._push_cache(fresh, other)
        else:
            await self._cache_queue.put((fresh, other))

    async def _push_cache(self, events: list[PersonEvent], other: TelemetryBatch) -> None:
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

    # --- writes, retried ----------------------------------------------------------------

    async def _store_events(
        self, events: list[PersonEvent], rejected: list[Rejected]
    ) -> list[uuid.UUID]:
        try:
            return await self._until_stored(lambda: store_batch(self._pool, events, rejected))
        except _POISON as exc:
            log.error("batch_has_bad_rows", error=str(exc), events=len(events))
            return await self._store_one_by_one(events, rejected)

    async def _store_telemetry(self, other: TelemetryBatch) -> None:
        """Status, health and occupancy: retried like events while the database is down;
        a batch the database refuses as data is logged and dropped (it cannot succeed)."""
        try:
            await self._until_stored(lambda: store_telemetry(self._pool, other))
        except _POISON as exc:
            log.error(
                "telemetry_refused",
                error=str(exc),
                statuses=len(other.statuses),
                health=len(other.health),
                occupancy=len(other.occupancy),
            )

    async def _until_stored(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run one write transaction until it commits, backing off while it fails.

        Rows the database refuses as data (``_POISON``) are raised to the caller: retrying
        them cannot succeed. Anything else is retried, since the messages are not acked
        until it commits: a database away (logged as a warning) or an error this code did
        not foresee (logged with its traceback and counted), so ingest never dies silently
        and loses nothing; it stalls, loudly, until the cause is gone.
        """
        result = await retry_with_backoff(
            write, self._worth_retrying, self._settings.db_retry_max_s
        )
        if not self.db_ok:
            log.info("db_write_recovered")
        self.db_ok = True
        return result

    def _worth_retrying(self, exc: Exception, delay: float) -> bool:
        """Log and count a failed write; False for rows the database refuses as data."""
        if isinstance(exc, _POISON):
            return False
        if isinstance(exc, _DB_AWAY):
            metrics.DB_ERRORS.inc()
            self.db_ok = False
            log.warning("db_write_failed", error=str(exc), retry_in_s=delay)
        else:
            metrics.TASK_FAILURES.labels(task="ingest").inc()
            log.exception("ingest_write_crashed", retry_in_s=delay)
        return True

    async def _store_one_by_one(
        self, events: list[PersonEvent], rejected: list[Rejected]
    ) -> list[uuid.UUID]:
        """Isolate the rows the database refuses, so one bad event cannot block the rest."""
        new_ids: list[uuid.UUID] = []
        root = self._settings.topic_root
        for event in events:
            try:
                new_ids += await store_batch(self._pool, [event], [])
            except _POISON as exc:
                topic = str(EventTopic(root, event.device_id, event.camera_id))
                rejected.append(
                    Rejected(topic, "db_rejected", str(exc), event.model_dump_json().encode())
                )
        if rejected:
            await self._store_events([], rejected)
        return new_ids
