"""The Redis "recent results" cache: the last hour of events per camera, for live views.

Optional by design: if Redis is unreachable at startup the cache is off (a warning, a
counter) and ingest carries on; errors later are counted and never block acknowledgement.
"""

from __future__ import annotations

import time
from datetime import datetime

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from cloud_hub.metrics import REDIS_ERRORS
from edge_agent.contract import PersonEvent

log = structlog.get_logger(__name__)


class LiveCache:
    """Per camera a sorted set of event JSON scored by arrival time; per device its last seen."""

    def __init__(self, url: str | None, namespace: str, ttl_s: int, max_per_camera: int) -> None:
        self._url = url
        self._prefix = f"hub:{namespace}"
        self._ttl_s = ttl_s
        self._max = max_per_camera
        self._redis: aioredis.Redis | None = None

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

    async def start(self) -> None:
        """Connect and ping; on failure leave the cache disabled."""
        if not self._url:
            log.warning("live_cache_disabled", reason="no redis_url")
            return
        client = aioredis.from_url(self._url, socket_timeout=2, socket_connect_timeout=2)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.inc()
            log.warning("live_cache_disabled", reason=str(exc), url=self._url)
            await client.aclose()
            return
        self._redis = client

    async def close(self) -> None:
        """Drop the connection pool."""
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

    async def push(self, events: list[PersonEvent]) -> None:
        """Add newly stored events; trims each camera to the TTL window and its size cap."""
        if self._redis is None or not events:
            return
        now = time.time()
        cameras: set[str] = set()
        last_seen: dict[str, datetime] = {}
        pipe = self._redis.pipeline(transaction=False)
        for i, event in enumerate(events):
            key = self.camera_key(event.device_id, event.camera_id)
            cameras.add(key)
            # Microsecond steps keep arrival order within a batch that shares one clock reading.
            pipe.zadd(key, {event.model_dump_json(): now + i * 1e-6})
            newest = last_seen.get(event.device_id)
            if newest is None or event.last_seen > newest:
                last_seen[event.device_id] = event.last_seen
        for key in cameras:
            pipe.zremrangebyscore(key, "-inf", now - self._ttl_s)
            pipe.zremrangebyrank(key, 0, -self._max - 1)
            pipe.expire(key, self._ttl_s)
        pipe.hset(self.devices_key, mapping={k: v.isoformat() for k, v in last_seen.items()})
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.inc()
            log.warning("live_cache_push_failed", error=str(exc), events=len(events))

    async def recent(self, device_id: str, camera_id: str, limit: int) -> list[PersonEvent] | None:
        """The camera's events that arrived within the TTL, newest first; ``None`` when disabled."""
        if self._redis is None:
            return None
        since = time.time() - self._ttl_s
        raw = await self._redis.zrevrangebyscore(
            self.camera_key(device_id, camera_id), "+inf", since, start=0, num=limit
        )
        return [PersonEvent.model_validate_json(item) for item in raw if isinstance(item, bytes)]
