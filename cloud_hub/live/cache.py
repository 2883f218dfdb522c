"""Redis: what is live. The last hour of events per camera, every device's latest status
and health, every camera's current occupancy, and the streams behind ``/v1/live/events``.

Optional by design: if Redis is unreachable at startup the cache is off (a warning, a
counter) and ingest carries on; errors later are counted and never block acknowledgement.

Keys, all under ``hub:{topic root}:``

- ``recent:{device}:{camera}``: sorted set of event JSON scored by arrival time, trimmed
  to the TTL and the per-camera cap;
- ``device_last_seen``: hash device -> ISO time (UTC, microseconds) of its newest event;
- ``device_status``, ``device_health``: hashes device -> the latest message as JSON, with
  the hub's ``received_at`` added;
- ``occupancy``: hash ``{device}/{camera}`` -> ``{"people", "at"}``;
- ``live:event``, ``live:occupancy``, ``live:status``: streams (``XADD ... MAXLEN ~``) of
  what ingest stored, with fields ``d`` (device), ``c`` (camera) and ``j`` (JSON). Every
  hub process reads them, so a browser connected to any hub sees what every hub stored.

One reader task per process (started with the first live subscriber, stopped with the
last) ``XREAD``s the streams and fans entries out to each subscriber's bounded queue; a
subscriber too slow to keep up is ended, and its client resumes from its Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from cloud_hub.metrics import REDIS_ERRORS
from cloud_hub.received import TelemetryBatch
from edge_agent.contract import PersonEvent

log = structlog.get_logger(__name__)

LiveKind = Literal["event", "occupancy", "status"]
LIVE_KINDS: tuple[LiveKind, ...] = ("event", "occupancy", "status")
_QUEUE_SIZE = 1000
_BLOCK_MS = 1000


# KEYS[1]: the key prefix. ARGV: now (integer µs since the epoch), ttl_s, per-camera cap,
# stream cap, n events, then (device, camera, event JSON) per event, then (device, last
# seen) pairs. The keys are built from the prefix inside the script, so this needs one
# Redis (not a Redis Cluster).
_PUSH_EVENTS = """
local prefix, now_us = KEYS[1], tonumber(ARGV[1])
local ttl, cap, smax, n = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local stream = prefix .. ':live:event'
local touched = {}
-- scores are arrival times in seconds, written from whole microseconds (exact in a double)
-- so that consecutive events never round to the same score
local function seconds(us)
  return string.format('%d.%06d', math.floor(us / 1000000), us % 1000000)
end
for i = 0, n - 1 do
  local d, c, j = ARGV[6 + 3 * i], ARGV[7 + 3 * i], ARGV[8 + 3 * i]
  local key = prefix .. ':recent:' .. d .. ':' .. c
  -- microsecond steps keep arrival order within a batch that shares one clock reading
  redis.call('ZADD', key, seconds(now_us + i), j)
  redis.call('XADD', stream, 'MAXLEN', '~', smax, '*', 'd', d, 'c', c, 'j', j)
  touched[key] = true
end
for key in pairs(touched) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', seconds(now_us - ttl * 1000000))
  redis.call('ZREMRANGEBYRANK', key, 0, -cap - 1)
  redis.call('EXPIRE', key, ttl)
end
-- fixed-width UTC times compare as strings: an older event arriving late (an outbox
-- resend) does not move a device's last seen back
local seen_key = prefix .. ':device_last_seen'
for i = 6 + 3 * n, #ARGV, 2 do
  local current = redis.call('HGET', seen_key, ARGV[i])
  if not current or ARGV[i + 1] > current then
    redis.call('HSET', seen_key, ARGV[i], ARGV[i + 1])
  end
end
return n
"""


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A Redis stream id (``ms-seq``) as a sortable pair; ``ValueError`` if it is not one."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """One stream entry: what kind, its stream id, whose, and its JSON."""

    kind: LiveKind
    id: str
    device_id: str
    camera_id: str | None
    data: str


@dataclass(eq=False)
class Subscription:
    """One live client: what it wants, and the queue the reader task fills."""

    kinds: frozenset[LiveKind]
    device_id: str | None = None
    camera_id: str | None = None
    cameras: frozenset[tuple[str, str]] | None = None  # a site's cameras
    queue: asyncio.Queue[LiveMessage] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_QUEUE_SIZE)
    )
    overflowed: bool = False

    def wants(self, message: LiveMessage) -> bool:
        """Whether this client asked for ``message``."""
        if message.kind not in self.kinds:
            return False
        if self.device_id is not None and message.device_id != self.device_id:
            return False
        if self.camera_id is not None and message.camera_id not in (None, self.camera_id):
            return False
        if self.cameras is not None:
            if message.camera_id is None:
                return any(d == message.device_id for d, _ in self.cameras)
            return (message.device_id, message.camera_id) in self.cameras
        return True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LiveCache:
    """Per camera a sorted set of event JSON scored by arrival time; per device its last
    seen, status and health; per camera its occupancy; and the live streams."""

    def __init__(
        self,
        url: str | None,
        namespace: str,
        ttl_s: int,
        max_per_camera: int,
        stream_max: int = 10_000,
    ) -> None:
        self._url = url
        self._prefix = f"hub:{namespace}"
        self._ttl_s = ttl_s
        self._max = max_per_camera
        self.stream_max = stream_max
        self._redis: aioredis.Redis | None = None
        self._subscribers: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None
        self._reader_ready: asyncio.Event | None = None
        self._push_script: Any = None

    @property
    def enabled(self) -> bool:
        """Whether Redis answered at startup."""
        return self._redis is not None

    def camera_key(self, device_id: str, camera_id: str) -> str:
        """The sorted set holding one camera's recent events."""
        return f"{self._prefix}:recent:{device_id}:{camera_id}"

    @property
    def devices_key(self) -> str:
        """The hash of device id to the ISO time its newest event was seen."""
        return f"{self._prefix}:device_last_seen"

    @property
    def status_key(self) -> str:
        """The hash of device id to its latest status (JSON)."""
        return f"{self._prefix}:device_status"

    @property
    def health_key(self) -> str:
        """The hash of device id to its latest health sample (JSON)."""
        return f"{self._prefix}:device_health"

    @property
    def occupancy_key(self) -> str:
        """The hash of ``device/camera`` to its current occupancy (JSON)."""
        return f"{self._prefix}:occupancy"

    def stream_key(self, kind: LiveKind) -> str:
        """The Redis stream of one kind of live message."""
        return f"{self._prefix}:live:{kind}"

    async def start(self) -> None:
        """Connect and ping; on failure leave the cache disabled."""
        if not self._url:
            log.warning("live_cache_disabled", reason="no redis_url")
            return
        client = aioredis.from_url(self._url, socket_timeout=5, socket_connect_timeout=2)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.inc()
            log.warning("live_cache_disabled", reason=str(exc), url=self._url)
            await client.aclose()
            return
        self._redis = client
        self._push_script = client.register_script(_PUSH_EVENTS)

    async def close(self) -> None:
        """Stop the live reader and drop the connection pool."""
        await self._stop_reader()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def ping(self) -> bool:
        """Whether Redis answers now (for health)."""
        if self._redis is None:
            return False
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    def _xadd(self, pipe: Any, kind: LiveKind, device: str, camera: str | None, data: str) -> None:
        pipe.xadd(
            self.stream_key(kind),
            {"d": device, "c": camera or "", "j": data},
            maxlen=self.stream_max,
            approximate=True,
        )

    async def push(self, events: list[PersonEvent]) -> None:
        """Add newly stored events; trims each camera to the TTL window and its size cap.

        One script call per batch: Redis runs the ZADD and XADD of every event and the
        trims of every camera it touched, so the hub packs one command and parses one reply
        instead of three to five per event (redis-py does both in Python: 70-85 µs per
        event before, see docs/hub.md)."""
        if self._redis is None or not events:
            return
        last_seen: dict[str, datetime] = {}
        args: list[str | int] = [time.time_ns() // 1000, self._ttl_s, self._max, self.stream_max]
        args.append(len(events))
        for event in events:
            args += (event.device_id, event.camera_id, event.model_dump_json())
            newest = last_seen.get(event.device_id)
            if newest is None or event.last_seen > newest:
                last_seen[event.device_id] = event.last_seen
        for device, seen in last_seen.items():
            args += (device, seen.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"))
        keys = [self._prefix]
        try:
            await self._push_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.inc()
            log.warning("live_cache_push_failed", error=str(exc), messages=len(events))

    async def push_telemetry(self, batch: TelemetryBatch) -> None:
        """Record the latest status, health and occupancy, and stream status and occupancy."""
        if self._redis is None or not batch:
            return
        pipe = self._redis.pipeline(transaction=False)
        for update in batch.statuses:
            if update.status is None:
                pipe.hdel(self.status_key, update.device_id)
                data = json.dumps({"device_id": update.device_id, "state": None})
            else:
                body = update.status.model_dump(mode="json")
                body["received_at"] = update.received_at.isoformat()
                data = json.dumps(body)
                pipe.hset(self.status_key, update.device_id, data)
            self._xadd(pipe, "status", update.device_id, None, data)
        for sample in batch.health:
            body = sample.health.model_dump(mode="json")
            body["received_at"] = sample.received_at.isoformat()
            pipe.hset(self.health_key, sample.health.device_id, json.dumps(body))
        for seen in batch.occupancy:
            data = seen.model_dump_json()
            pipe.hset(self.occupancy_key, f"{seen.device_id}/{seen.camera_id}", data)
            self._xadd(pipe, "occupancy", seen.device_id, seen.camera_id, data)
        count = len(batch.statuses) + len(batch.health) + len(batch.occupancy)
        await self._execute(pipe, "live_cache_telemetry_failed", count)

    async def _execute(self, pipe: Any, what: str, count: int) -> None:
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.inc()
            log.warning(what, error=str(exc), messages=count)

    async def recent(self, device_id: str, camera_id: str, limit: int) -> list[PersonEvent] | None:
        """The camera's events that arrived within the TTL, newest first; ``None`` when disabled."""
        if self._redis is None:
            return None
        since = time.time() - self._ttl_s
        raw = await self._redis.zrevrangebyscore(
            self.camera_key(device_id, camera_id), "+inf", since, start=0, num=limit
        )
        return [PersonEvent.model_validate_json(item) for item in raw if isinstance(item, bytes)]

    async def occupancy(self) -> list[dict[str, Any]] | None:
        """Every camera's latest occupancy message; ``None`` when disabled."""
        if self._redis is None:
            return None
        raw: dict[Any, Any] = await self._redis.hgetall(self.occupancy_key)
        return [json.loads(value) for value in raw.values()]

    # --- the live streams -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(
        self, subscription: Subscription, last_event_id: str | None = None
    ) -> AsyncIterator[LiveFeed]:
        """Receive live messages: first, with ``last_event_id``, the events stored after
        it that the stream still holds, then new messages as they are stored."""
        if self._redis is None:
            raise RuntimeError("live cache disabled")
        self._subscribers.add(subscription)
        try:
            await self._ensure_reader()
            replay = None
            if last_event_id is not None and "event" in subscription.kinds:
                replay = self._replay(last_event_id)
            yield LiveFeed(subscription, replay, last_event_id)
        finally:
            self._subscribers.discard(subscription)
            if not self._subscribers:
                await self._stop_reader()

    async def _replay(self, after: str) -> AsyncIterator[LiveMessage]:
        assert self._redis is not None
        key = self.stream_key("event")
        while True:
            entries: Any = await self._redis.xrange(key, min=f"({after}", max="+", count=500)
            if not entries:
                return
            for entry_id, fields in entries:
                after = _text(entry_id)
                yield self._message("event", after, fields)

    @staticmethod
    def _message(kind: LiveKind, entry_id: str, fields: dict[Any, Any]) -> LiveMessage:
        f = {_text(k): _text(v) for k, v in fields.items()}
        return LiveMessage(kind, entry_id, f.get("d", ""), f.get("c") or None, f.get("j", "{}"))

    async def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader_ready = asyncio.Event()
            self._reader = asyncio.create_task(self._read(self._reader_ready), name="live")
        assert self._reader_ready is not None
        # Wait until the reader knows where the streams end, so a replay that follows
        # overlaps what it delivers instead of leaving a gap.
        waiter = asyncio.ensure_future(self._reader_ready.wait())
        await asyncio.wait([waiter, self._reader], return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()

    async def _stop_reader(self) -> None:
        task, self._reader = self._reader, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _read(self, ready: asyncio.Event) -> None:
        assert self._redis is not None
        kinds = {self.stream_key(kind): kind for kind in LIVE_KINDS}
        positions: dict[str, str] = {}
        while True:
            try:
                if not positions:
                    for key in kinds:
                        last = await self._redis.xrevrange(key, count=1)
                        positions[key] = _text(last[0][0]) if last else "0-0"
                    ready.set()
                streams: Any = positions
                answer: Any = await self._redis.xread(streams, count=500, block=_BLOCK_MS)
            except (RedisError, OSError) as exc:
                REDIS_ERRORS.inc()
                log.warning("live_stream_read_failed", error=str(exc))
                ready.set()
                await asyncio.sleep(1.0)
                continue
            for key, entries in answer or []:
                name = _text(key)
                for entry_id, fields in entries:
                    positions[name] = _text(entry_id)
                    self._dispatch(self._message(kinds[name], positions[name], fields))

    def _dispatch(self, message: LiveMessage) -> None:
        for subscription in list(self._subscribers):
            if subscription.overflowed or not subscription.wants(message):
                continue
            try:
                subscription.queue.put_nowait(message)
            except asyncio.QueueFull:
                subscription.overflowed = True  # its client reconnects and resumes


class LiveFeed:
    """What one subscriber reads: the replay, then its queue."""

    def __init__(
        self,
        subscription: Subscription,
        replay: AsyncIterator[LiveMessage] | None,
        last_event_id: str | None,
    ) -> None:
        self._subscription = subscription
        self._replay = replay
        self._sent = stream_id_key(last_event_id) if replay is not None and last_event_id else None

    @property
    def overflowed(self) -> bool:
        """Whether the subscriber fell behind and lost messages (its stream must end)."""
        return self._subscription.overflowed

    async def next(self, timeout_s: float) -> LiveMessage | None:
        """The next message it wants, or None when none came within ``timeout_s``."""
        while self._replay is not None:
            try:
                message = await anext(self._replay)
            except StopAsyncIteration:
                self._replay = None
                break
            self._sent = stream_id_key(message.id)
            if self._subscription.wants(message):
                return message
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            try:
                message = await asyncio.wait_for(self._subscription.queue.get(), remaining)
            except TimeoutError:
                return None
            if (
                self._sent is not None
                and message.kind == "event"
                and stream_id_key(message.id) <= self._sent
            ):
                continue  # the replay sent it already
            return message
