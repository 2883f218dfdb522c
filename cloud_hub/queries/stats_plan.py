"""Which source answers which part of a range, and what an answer would cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from cloud_hub.queries.buckets import StatsBucketSize, _ceil, _truncate
from cloud_hub.queries.filters import Filters, StatsFilter
from cloud_hub.queries.stats_sql import _DIMENSIONS, _Statement
from cloud_hub.storage.db import relation_exists

# (bucket, group) pairs in one answer by default (the API passes HUB_STATS_MAX_PAIRS): a
# pair costs the hub 3-4.5 KB at its peak (the row, the models, the JSON), so 20,000 is
# about 60-90 MB (docs/hub.md, "Limits").
MAX_GROUPS = 20_000


class TooLargeError(ValueError):
    """An answer over a cost limit, refused before it is read (estimated) or while it
    is (counted): the API answers 422 with this message."""


# --- which source answers which part of a range ---------------------------------------------

Source = Literal["stats_daily", "stats_hourly", "person_events"]


@dataclass(frozen=True, slots=True)
class Span:
    """``[start, end)`` read from one source."""

    source: Source
    start: datetime
    end: datetime


def plan_spans(start: datetime, end: datetime, bucket: StatsBucketSize) -> list[Span]:
    """Split ``[start, end)`` into the spans each source can answer exactly.

    ``stats_daily`` rows count whole UTC days and ``stats_hourly`` rows whole hours, so
    they serve only days and hours lying entirely inside the range (a day only for day,
    week and month buckets); the partial hours at either end, and minute buckets, come
    from raw events. Both rollups are exact up to the newest event (materialised below a
    watermark, aggregated from person_events above it), so no span depends on refresh
    timing.
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if bucket == "minute":
        return [Span("person_events", start, end)]
    spans: list[Span] = []
    hours_from, hours_to = _ceil(start, "hour"), _truncate(end, "hour")
    if hours_from >= hours_to:
        return [Span("person_events", start, end)]
    if start < hours_from:
        spans.append(Span("person_events", start, hours_from))
    days_from, days_to = _ceil(hours_from, "day"), _truncate(hours_to, "day")
    if bucket in ("day", "week", "month") and days_from < days_to:
        if hours_from < days_from:
            spans.append(Span("stats_hourly", hours_from, days_from))
        spans.append(Span("stats_daily", days_from, days_to))
        if days_to < hours_to:
            spans.append(Span("stats_hourly", days_to, hours_to))
    else:
        spans.append(Span("stats_hourly", hours_from, hours_to))
    if hours_to < end:
        spans.append(Span("person_events", hours_to, end))
    return spans


_BEGINNING = datetime.min.replace(tzinfo=UTC)


async def _plain_watermarks(conn: asyncpg.Connection) -> tuple[datetime, datetime] | None:
    """The plain backend's (hourly, daily) watermarks; None on TimescaleDB. Everything
    before a watermark is materialised; the statement reads the rollup tables below it
    and raw events above it, with the watermark as a bound the planner can see."""
    if not await conn.fetchval("SELECT to_regclass('rollup_watermarks') IS NOT NULL"):
        return None
    row = await conn.fetchrow(
        """SELECT max(watermark) FILTER (WHERE name = 'stats_hourly' AND watermark > '-infinity')
                      AS hourly,
                  max(watermark) FILTER (WHERE name = 'stats_daily' AND watermark > '-infinity')
                      AS daily
           FROM rollup_watermarks"""
    )
    assert row is not None
    return row["hourly"] or _BEGINNING, row["daily"] or _BEGINNING


async def _plan(
    conn: asyncpg.Connection,
    statement: _Statement,
    start: datetime,
    end: datetime,
    direct: bool = True,
) -> None:
    """Add to ``statement`` the branches that answer ``[start, end)`` (:func:`plan_spans`),
    inside the caller's repeatable-read transaction: on the plain backend the watermarks
    and pending hours are read in the same snapshot as the statement."""
    # Bounds are parameters; a cached generic plan would not see their values.
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    marks = await _plain_watermarks(conn) if direct else None
    f = statement.filters
    fleet_wide = f.device_id is None and f.camera_id is None and f.site is None
    if marks is not None:
        pending = await conn.fetch("SELECT device_id, hour FROM rollup_pending_hours")
        statement.set_pending([(r["device_id"], r["hour"]) for r in pending], marks[1])
        statement.fleet = fleet_wide and await relation_exists(conn, "stats_daily_fleet_rollup")
    elif fleet_wide and not statement.per_camera:
        # TimescaleDB: the fleet-wide aggregates (migration 012) where they exist.
        statement.fleet = await relation_exists(conn, "stats_daily_fleet")
    for span in plan_spans(start, end, statement.bucket):
        if span.source == "person_events":
            statement.raw(span.start, span.end)
        elif marks is None:
            source = f"{span.source}_fleet" if statement.fleet else span.source
            statement.rollup(source, span.start, span.end)
        elif span.source == "stats_hourly":
            statement.plain_hourly(span.start, span.end, marks[0])
        else:
            statement.plain_daily(span.start, span.end, *marks)


# --- what an answer would cost, before it is read -------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetSize:
    """How many devices, cameras and sites a statement's filters can match, from the
    small tables (registry, statuses, devices), never from events: the estimate behind
    the limits on group-by answers and reports."""

    devices: int
    cameras: int
    sites: int  # sites registered, plus one for cameras registered at none

    def groups(self, group_by: Sequence[str], filters: StatsFilter) -> dict[str, int]:
        """How many values each dimension of ``group_by`` may take: the site, device or
        camera part counted once (a camera has one device and one site), gender 3, age
        band 9, direction 3, or 1 where a filter fixes it."""
        wanted = set(group_by)
        out: dict[str, int] = {}
        if "camera" in wanted or {"device", "site"} <= wanted:
            out["camera" if "camera" in wanted else "device x site"] = self.cameras
        elif "device" in wanted:
            out["device"] = self.devices
        elif "site" in wanted:
            out["site"] = self.sites
        for name, values in _DIMENSIONS.items():
            if name in wanted:
                out[name] = 1 if getattr(filters, name) is not None else len(values)
        return out


# Cameras the hub knows of: registered ones and those the devices' statuses list.
_KNOWN_CAMERAS = """
SELECT device_id, camera_id FROM cameras
UNION
SELECT s.device_id, x->>'camera_id' FROM device_status s, jsonb_array_elements(s.cameras) x
"""


async def fleet_size(
    conn: asyncpg.Connection | asyncpg.Pool,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
) -> FleetSize:
    """A cheap count (three small tables, one round trip) of what the filters match.

    With a site, only cameras registered at it count (as in the statistics). Otherwise
    the registered and reported cameras, plus one for each device that sent events but
    named no camera yet: every device has at least one. An estimate, not a bound, as a
    device may publish for cameras it never reported: the statements that follow are
    bounded by ``LIMIT`` too."""
    if site is not None:
        registry = Filters(site)
        registry.clauses.append("site = $1")
        registry.add_if_given("device_id = {}", device_id)
        registry.add_if_given("camera_id = {}", camera_id)
        row = await conn.fetchrow(
            "SELECT count(*) AS cameras, count(DISTINCT device_id) AS devices "
            f"FROM cameras {registry.where()}",
            *registry.args,
        )
        assert row is not None
        return FleetSize(row["devices"], row["cameras"], 1)
    known = Filters(device_id, camera_id)
    known.clauses += [
        "($1::text IS NULL OR device_id = $1)",
        "($2::text IS NULL OR camera_id = $2)",
    ]
    bare = """SELECT d.device_id FROM devices d
              WHERE ($1::text IS NULL OR d.device_id = $1)
                AND NOT EXISTS (SELECT 1 FROM known k WHERE k.device_id = d.device_id)"""
    row = await conn.fetchrow(
        f"""WITH known AS ({_KNOWN_CAMERAS}), bare AS ({bare})
            SELECT (SELECT count(*) FROM known {known.where()})
                   + (SELECT count(*) FROM bare) AS cameras,
                   (SELECT count(*) FROM (SELECT device_id FROM known {known.where()}
                                          UNION SELECT device_id FROM bare) AS d) AS devices,
                   (SELECT count(DISTINCT site) FROM cameras {known.where()}) + 1 AS sites""",
        *known.args,
    )
    assert row is not None
    return FleetSize(row["devices"], row["cameras"], row["sites"])


def _too_large(what: str, estimate: int, limit: int, parts: str, narrow: str) -> TooLargeError:
    return TooLargeError(
        f"{what} would hold about {estimate:,} bucket x group pairs ({parts}), over the "
        f"limit of {limit:,} (HUB_STATS_MAX_PAIRS); {narrow}"
    )


def check_stats_size(
    bucket_count: int,
    bucket: str,
    group_by: Sequence[str],
    filters: StatsFilter,
    fleet: FleetSize | None,
    limit: int,
) -> int:
    """The estimated (bucket, group) pairs of a statistics answer; :class:`TooLargeError`
    when over ``limit``. Cheap: nothing is read but ``fleet``, counted beforehand."""
    sizes = FleetSize(1, 1, 1) if fleet is None else fleet
    dims = sizes.groups(group_by, filters)
    groups = 1
    for count in dims.values():
        groups *= max(1, count)
    estimate = bucket_count * groups
    if estimate > limit:
        parts = " x ".join([f"{bucket_count:,} {bucket} buckets"] + [
            f"{name} {count:,}" for name, count in dims.items()
        ])  # fmt: skip
        raise _too_large(
            "the answer",
            estimate,
            limit,
            parts,
            "shorten the range, use a larger bucket, group by fewer dimensions, or filter "
            "(device_id, camera_id, site, gender, age_band, direction)",
        )
    return estimate
