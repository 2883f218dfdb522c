"""``LiveCache.push`` against a real Redis: what the one-script-per-batch update leaves
behind (recent events per camera within the TTL and the cap, the live stream in arrival
order, each device's newest time) and that a Redis error is counted, not raised."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from cloud_hub.live.cache import LiveCache
from cloud_hub.metrics import REDIS_ERRORS
from tests.conftest import make_event

URL = "redis://127.0.0.1:6379/0"


def _cache(namespace: str, ttl_s: int = 3600, cap: int = 4) -> LiveCache:
    return LiveCache(URL, namespace, ttl_s, cap, stream_max=1000)


def test_push_keeps_each_cameras_newest_within_the_cap_and_streams_in_order() -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    client: Any = redis.Redis.from_url(URL, decode_responses=True)
    now = datetime.now(UTC)
    door = [
        make_event("dev-a", "door", track_id=i, last_seen=now - timedelta(seconds=9 - i))
        for i in range(6)
    ]
    hall = [make_event("dev-a", "hall", track_id=10), make_event("dev-b", "door", track_id=20)]

    async def scenario() -> None:
        cache = _cache(namespace)
        await cache.start()
        assert cache.enabled
        await cache.push(door[:3] + hall)
        await cache.push(door[3:])
        newest = await cache.recent("dev-a", "door", 10)
        assert newest is not None
        # cap 4: the two oldest of the six went; newest first
        assert [e.track_id for e in newest] == [5, 4, 3, 2]
        assert [e.track_id for e in await cache.recent("dev-a", "hall", 10) or []] == [10]
        await cache.close()

    try:
        asyncio.run(scenario())
        prefix = f"hub:{namespace}"
        assert 0 < client.ttl(f"{prefix}:recent:dev-a:door") <= 3600
        entries = client.xrange(f"{prefix}:live:event")
        pushed = door[:3] + hall + door[3:]
        assert [(f["d"], f["c"], json.loads(f["j"])["event_id"]) for _, f in entries] == [
            (e.device_id, e.camera_id, str(e.event_id)) for e in pushed
        ]
        seen = client.hgetall(f"{prefix}:device_last_seen")
        assert datetime.fromisoformat(seen["dev-a"]) == max(e.last_seen for e in door + hall[:1])
        assert datetime.fromisoformat(seen["dev-b"]) == hall[1].last_seen
    finally:
        keys = list(client.scan_iter(f"hub:{namespace}:*"))
        if keys:
            client.delete(*keys)


def test_push_drops_events_older_than_the_ttl() -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    client: Any = redis.Redis.from_url(URL, decode_responses=True)
    key = f"hub:{namespace}:recent:dev-a:door"
    # An entry that arrived two hours ago (scores are arrival times) must be trimmed by
    # the next push to the same camera.
    client.zadd(key, {"stale": time.time() - 7200})

    async def scenario() -> None:
        cache = _cache(namespace, ttl_s=3600, cap=100)
        await cache.start()
        await cache.push([make_event("dev-a", "door", track_id=1)])
        await cache.close()

    try:
        asyncio.run(scenario())
        members = client.zrange(key, 0, -1)
        assert "stale" not in members
        assert len(members) == 1
    finally:
        keys = list(client.scan_iter(f"hub:{namespace}:*"))
        if keys:
            client.delete(*keys)


def test_a_redis_error_during_push_is_counted_not_raised() -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    client: Any = redis.Redis.from_url(URL, decode_responses=True)
    # The stream key holding a string makes XADD fail inside the script.
    client.set(f"hub:{namespace}:live:event", "not a stream")
    before = REDIS_ERRORS._value.get()

    async def scenario() -> None:
        cache = _cache(namespace)
        await cache.start()
        await cache.push([make_event("dev-a", "door", track_id=1)])
        await cache.close()

    try:
        asyncio.run(scenario())
        assert REDIS_ERRORS._value.get() == before + 1
    finally:
        keys = list(client.scan_iter(f"hub:{namespace}:*"))
        if keys:
            client.delete(*keys)
