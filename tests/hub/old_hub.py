"""What a hub before migration 010 did on the plain backend, for the upgrade tests: its
rollup round, with the measures of those days. (The hub's own round now writes the
columns 010 adds, so it cannot stand in for an older one.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from cloud_hub.storage import rollups

_HOURS = """INSERT INTO stats_hourly_rollup
SELECT date_trunc('hour', last_seen, 'UTC'), device_id, camera_id, coalesce(gender, 'unknown'),
       age_band, coalesce(direction, 'none'), count(*), count(*) FILTER (WHERE return_of IS NULL),
       sum(age::double precision), count(age), sum(dwell_s::double precision)
FROM person_events WHERE last_seen < $1 GROUP BY 1, 2, 3, 4, 5, 6"""
_DAYS = """INSERT INTO stats_daily_rollup
SELECT date_trunc('day', bucket, 'UTC'), device_id, camera_id, gender, age_band, direction,
       sum(events), sum(visitors), sum(age_sum), sum(age_n), sum(dwell_sum)
FROM stats_hourly_rollup WHERE bucket < $1 GROUP BY 1, 2, 3, 4, 5, 6"""
_MARK = "UPDATE rollup_watermarks SET watermark = $1 WHERE name = $2"


async def old_plain_round(conn: asyncpg.Connection, lag_s: float = 600) -> None:
    """Materialise everything up to the hour and day that ended ``lag_s`` ago, as the
    first round of an older hub did (no rollup rows yet); the late events its round took
    from ``rollup_invalidations`` are in those hours already."""
    settled = datetime.now(UTC) - timedelta(seconds=lag_s)
    hour, day = rollups.floor_hour(settled), rollups.floor_day(settled)
    async with conn.transaction():
        await conn.execute(_HOURS, hour)
        await conn.execute(_DAYS, day)
        await conn.execute(_MARK, hour, "stats_hourly")
        await conn.execute(_MARK, day, "stats_daily")
        await conn.execute("DELETE FROM rollup_invalidations")
