"""Occupancy: people in view over time (database) and now (Redis or database)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from cloud_hub.queries.buckets import StatsBucketSize, _truncate, bucket_starts
from cloud_hub.queries.filters import Filters, StatsFilter
from cloud_hub.queries.stats_plan import MAX_GROUPS, TooLargeError, check_stats_size, fleet_size
from cloud_hub.queries.stats_sql import _GROUP_FIELDS
from cloud_hub.schemas import CurrentOccupancy, OccupancyBucket


async def occupancy(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    where: StatsFilter,
    group_by: Sequence[str] = (),
    *,
    max_pairs: int = MAX_GROUPS,
) -> list[OccupancyBucket]:
    """Occupancy per bucket (and group) over the minutes in ``[start, end)`` of the
    cameras ``where`` names (its device, camera and site; occupancy has no dimensions);
    refused (:class:`TooLargeError`) when buckets x groups may exceed ``max_pairs``,
    estimated as for the statistics before the query, and counted by its ``LIMIT``."""
    device_id, camera_id, site = where.device_id, where.camera_id, where.site
    starts = bucket_starts(start, end, bucket)
    fleet = await fleet_size(pool, device_id, camera_id, site) if group_by else None
    check_stats_size(len(starts), bucket, group_by, StatsFilter(), fleet, max_pairs)
    columns: list[str] = []
    for name in dict.fromkeys(group_by):
        for column in ("site",) if name == "site" else _GROUP_FIELDS[name]:
            if column not in columns:
                columns.append(column)
    inner = [f"{'c' if c == 'site' else 'o'}.{c}" for c in columns]
    qualified = ", ".join(f"{q} AS {c}" for q, c in zip(inner, columns, strict=True))
    filters = Filters(bucket, _truncate(start, "minute"), end)
    filters.clauses += ["o.bucket >= $2", "o.bucket < $3"]
    filters.add_if_given("o.device_id = {}", device_id)
    filters.add_if_given("o.camera_id = {}", camera_id)
    filters.add_if_given("c.site = {}", site)
    join = (
        "LEFT JOIN cameras c ON c.device_id = o.device_id AND c.camera_id = o.camera_id"
        if site is not None or "site" in columns
        else ""
    )
    outer = "".join(f", {c}" for c in columns)
    rows = await pool.fetch(
        f"""WITH per_minute AS (
                SELECT o.bucket AS minute{", " + qualified if qualified else ""},
                       sum(o.people_sum::double precision / o.samples) AS people,
                       sum(o.people_max)::bigint AS peak, sum(o.samples)::bigint AS samples
                FROM occupancy_minutely o {join} {filters.where()}
                GROUP BY o.bucket{"".join(f", {q}" for q in inner)}
            )
            SELECT date_trunc($1, minute, 'UTC') AS bucket{outer},
                   round(avg(people)::numeric, 3)::double precision AS people_avg,
                   max(peak) AS people_max, count(*) AS minutes, sum(samples) AS samples
            FROM per_minute GROUP BY 1{outer} ORDER BY 1{outer}
            LIMIT {int(max_pairs) + 1}""",
        *filters.args,
    )
    if len(rows) > max_pairs:
        raise TooLargeError(
            f"the answer holds more than {max_pairs:,} bucket x group pairs "
            "(HUB_STATS_MAX_PAIRS); shorten the range, use a larger bucket or filter"
        )
    valid = set(starts)
    return [
        OccupancyBucket(
            start=row["bucket"],
            key={c: row[c] for c in columns} if columns else None,
            people_avg=row["people_avg"],
            people_max=row["people_max"],
            minutes=row["minutes"],
            samples=row["samples"],
        )
        for row in rows
        if row["bucket"] in valid
    ]


async def current_occupancy_db(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every camera's newest sample from the database (when Redis is off)."""
    rows = await pool.fetch(
        """SELECT DISTINCT ON (device_id, camera_id) device_id, camera_id,
                  last_people AS people, last_at AS at
           FROM occupancy_minutely WHERE bucket > now() - interval '1 day'
           ORDER BY device_id, camera_id, bucket DESC"""
    )
    return [dict(row) for row in rows]


async def with_camera_names(
    pool: asyncpg.Pool,
    samples: Iterable[dict[str, Any]],
    where: StatsFilter,
) -> list[CurrentOccupancy]:
    """Samples of the cameras ``where`` names (device, camera, site), labelled with their
    camera's registered site and name."""
    registry = {
        (r["device_id"], r["camera_id"]): (r["site"], r["name"])
        for r in await pool.fetch("SELECT device_id, camera_id, site, name FROM cameras")
    }
    out = []
    for s in samples:
        site, name = registry.get((s["device_id"], s["camera_id"]), (None, None))
        if where.device_id is not None and s["device_id"] != where.device_id:
            continue
        if where.camera_id is not None and s["camera_id"] != where.camera_id:
            continue
        if where.site is not None and site != where.site:
            continue
        out.append(
            CurrentOccupancy(
                device_id=s["device_id"],
                camera_id=s["camera_id"],
                people=s["people"],
                at=s["at"],
                site=site,
                name=name,
            )
        )
    return sorted(out, key=lambda c: (c.device_id, c.camera_id))
