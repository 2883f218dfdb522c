"""Cost of the hub's live-cache update per event: the one-script-per-batch ``LiveCache.push``
against the pipeline of ZADD/XADD per event (and trims per camera) it replaced, same
events, same Redis, same process, alternating rounds.

Usage::

    python bench/live_cache_push.py [--batch 1000] [--rounds 20] [--redis redis://127.0.0.1:6379/0]

Prints the client's CPU and wall time per event (p50 and p95 over rounds) for both, and
the ratio. Redis's own CPU is on its own core in production and is not counted here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_hub.live.cache import LiveCache
from cloud_hub.tools.simulated_fleet import Fleet
from edge_agent.contract import PersonEvent


async def pipeline_push(cache: LiveCache, redis: Any, events: list[PersonEvent]) -> None:
    """The previous implementation: one pipeline, commands per event and per camera."""
    now = time.time()
    cameras: set[str] = set()
    last_seen: dict[str, datetime] = {}
    pipe = redis.pipeline(transaction=False)
    for i, event in enumerate(events):
        key = cache.camera_key(event.device_id, event.camera_id)
        cameras.add(key)
        data = event.model_dump_json()
        pipe.zadd(key, {data: now + i * 1e-6})
        pipe.xadd(
            cache.stream_key("event"),
            {"d": event.device_id, "c": event.camera_id, "j": data},
            maxlen=cache.stream_max,
            approximate=True,
        )
        newest = last_seen.get(event.device_id)
        if newest is None or event.last_seen > newest:
            last_seen[event.device_id] = event.last_seen
    for key in cameras:
        pipe.zremrangebyscore(key, "-inf", now - 3600)
        pipe.zremrangebyrank(key, 0, -200 - 1)
        pipe.expire(key, 3600)
    pipe.hset(cache.devices_key, mapping={k: v.isoformat() for k, v in last_seen.items()})
    await pipe.execute()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    fleet = Fleet(500, 4, seed=1, prefix="bench")
    events = [fleet.event(datetime.now(UTC)) for _ in range(args.batch)]
    caches = {
        "script": LiveCache(args.redis, "bench-script", 3600, 200),
        "pipeline": LiveCache(args.redis, "bench-pipeline", 3600, 200),
    }
    for cache in caches.values():
        await cache.start()
    import redis.asyncio as aioredis

    raw = aioredis.from_url(args.redis)
    cpu: dict[str, list[float]] = {name: [] for name in caches}
    wall: dict[str, list[float]] = {name: [] for name in caches}
    for round_ in range(args.rounds + 2):  # two warm-up rounds
        for name, cache in caches.items():
            c0, w0 = time.process_time(), time.perf_counter()
            if name == "script":
                await cache.push(events)
            else:
                await pipeline_push(cache, raw, events)
            c1, w1 = time.process_time(), time.perf_counter()
            if round_ >= 2:
                cpu[name].append((c1 - c0) / len(events) * 1e6)
                wall[name].append((w1 - w0) / len(events) * 1e6)
    print(f"{args.batch} events per push, {args.rounds} rounds; µs per event (client)")
    print(f"{'':10} {'CPU p50':>8} {'CPU p95':>8} {'wall p50':>9} {'wall p95':>9}")
    for name in caches:
        print(
            f"{name:10} {statistics.median(cpu[name]):8.1f} {_pct(cpu[name], 0.95):8.1f} "
            f"{statistics.median(wall[name]):9.1f} {_pct(wall[name], 0.95):9.1f}"
        )
    ratio = statistics.median(cpu["pipeline"]) / statistics.median(cpu["script"])
    print(f"pipeline / script, CPU p50: {ratio:.1f}x")
    for name, cache in caches.items():
        keys = [k async for k in raw.scan_iter(f"hub:bench-{name}:*")]
        if keys:
            await raw.delete(*keys)
        await cache.close()
    await raw.aclose()


if __name__ == "__main__":
    asyncio.run(main())
