"""Before/after figures for the plain backend's statistics plan (docs/hub.md).

``python -m tests.hub.bench_stats_plan [events]`` builds a throwaway plain PostgreSQL
database with ``events`` (300,000 by default) over 14 days from 20 cameras, runs one
materialisation round, and times ``queries.stats_rows`` reading the ``stats_hourly`` /
``stats_daily`` views (before) against reading the rollup tables and raw events with the
watermarks as literal bounds (after), plus the raw ``GROUP BY`` over the same range.
It prints the median of 5 runs of each, and checks that both give the same rows.
Not a test (it takes a minute): run it by hand after changing the statistics path.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from cloud_hub import queries
from cloud_hub.settings import HubSettings
from cloud_hub.storage import rollups
from cloud_hub.storage.db import open_pool, prepare_database
from tests.conftest import PG_ADMIN_URL

_FILL = """
INSERT INTO person_events (event_id, device_id, camera_id, track_id, first_seen, last_seen,
    dwell_s, gender, gender_confidence, age, age_low, age_high, age_confidence, direction,
    crops, models, return_of)
SELECT gen_random_uuid(), 'dev-' || (i % 10), 'cam-' || (i / 10 % 2), i,
       t - interval '5 seconds', t, dwell, (ARRAY['female', 'male', NULL])[1 + i % 3], 0.9,
       age, greatest(age - 5, 0), least(age + 5, 120), 0.6,
       (ARRAY['in', 'out', NULL])[1 + i / 3 % 3], 3, '{}',
       CASE WHEN i % 5 = 0 THEN gen_random_uuid() END
FROM (SELECT i, now() - (random() + i * 0) * interval '14 days' AS t,
             1 + random() * 85 AS age, 1 + random() * 60 AS dwell
      FROM generate_series(1, $1) AS i) AS g
"""


async def _median_ms(work: Callable[[], Awaitable[Any]], runs: int = 5) -> float:
    await work()  # warm the caches
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


_RAW = """SELECT date_trunc($1, last_seen, 'UTC'), coalesce(gender, 'unknown'), age_band,
       coalesce(direction, 'none'), count(*), count(*) FILTER (WHERE return_of IS NULL),
       sum(age), count(age), sum(dwell_s)
FROM person_events WHERE last_seen >= $2 AND last_seen < $3
  AND ($4::text IS NULL OR device_id = $4)
GROUP BY 1, 2, 3, 4"""


async def _case(
    pool: asyncpg.Pool,
    label: str,
    start: datetime,
    end: datetime,
    bucket: queries.StatsBucketSize,
    device: str | None,
) -> None:
    def views() -> Awaitable[Any]:
        return queries.stats_rows(pool, start, end, bucket, device, direct=False)

    def direct() -> Awaitable[Any]:
        return queries.stats_rows(pool, start, end, bucket, device)

    def raw() -> Awaitable[Any]:
        return pool.fetch(_RAW, bucket, start, end, device)

    assert await views() == await direct(), label
    before, after, baseline = (
        await _median_ms(views),
        await _median_ms(direct),
        await _median_ms(raw),
    )
    print(f"{label:34} {before:12.1f} ms {after:12.1f} ms {baseline:10.1f} ms")


async def main(count: int) -> None:
    name = f"audience_bench_{uuid.uuid4().hex[:8]}"
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    settings = HubSettings(database_url=url, timescaledb="off")
    await prepare_database(url, settings)
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "SELECT hub_ensure_partitions(now() - interval '15 days', now() + interval '1 day')"
            )
            started = time.perf_counter()
            await conn.execute(_FILL, count)
            await conn.execute("ANALYZE")
            filled = time.perf_counter() - started
            started = time.perf_counter()
            await rollups.maintain(conn, settings)
            rolled = time.perf_counter() - started
            await conn.execute("ANALYZE")
            hourly = await conn.fetchval("SELECT count(*) FROM stats_hourly_rollup")
        finally:
            await conn.close()
        print(
            f"{count} events over 14 days from 20 cameras ({filled:.1f} s), one rollup round "
            f"{rolled:.1f} s, {hourly} hourly rollup rows"
        )
        pool = await open_pool(url, 2)
        try:
            now = datetime.now(UTC)
            cases: list[tuple[str, datetime, datetime, queries.StatsBucketSize]] = [
                ("last 14 days by day", now - timedelta(days=14), now, "day"),
                ("last 14 days by hour", now - timedelta(days=14), now, "hour"),
                ("last 24 hours by hour", now - timedelta(hours=24), now, "hour"),
                ("last 7 days by day, one device", now - timedelta(days=7), now, "day"),
            ]
            print(f"{'query':34} {'views (before)':>15} {'direct (after)':>15} {'raw':>13}")
            for label, start, end, bucket in cases:
                device = "dev-3" if "device" in label else None
                await _case(pool, label, start, end, bucket, device)
        finally:
            await pool.close()
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300_000))
