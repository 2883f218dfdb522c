"""The read path behind the API: statistics, event pages and exports, devices, cameras,
occupancy and the daily report.

Statistics (:func:`stats_rows`) read, for each part of the range, the source that holds
it exactly (:func:`plan_spans`): daily rollups for whole UTC days, hourly rollups for
whole hours, raw events for partial hours and minutes. On TimescaleDB the rollups are
the continuous aggregates. On plain PostgreSQL the query reads the watermarks first, in
the same snapshot, and then the rollup tables below them and ``person_events`` above
them with those times as bounds, rather than the ``stats_hourly``/``stats_daily`` views:
inside the views the bound is a sub-select, which the planner cannot see, so it guessed a
third of all events above the watermark and scanned whole partitions (docs/hub.md).
Statements without a device, camera or site filter or per-camera grouping read the
fleet-wide rollup tables there (``stats_*_fleet_rollup``, summed over cameras by
triggers), which hold hundreds of times fewer rows than the per-camera ones at fleet
scale (docs/hub.md, "Query performance").
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import asyncpg

from cloud_hub.api.schemas import (
    AGE_BANDS,
    DIRECTIONS,
    GENDERS,
    Camera,
    CameraCreate,
    CameraDay,
    CameraUpdate,
    Counts,
    CurrentOccupancy,
    Device,
    EventRecord,
    EventsPage,
    HourCounts,
    OccupancyBucket,
    StatsBucket,
    StatsGroup,
    StatsTotals,
)

MAX_BUCKETS = 10_000
# (bucket, group) pairs in one answer by default (the API passes HUB_STATS_MAX_PAIRS): a
# pair costs the hub 3-4.5 KB at its peak (the row, the models, the JSON), so 20,000 is
# about 60-90 MB (docs/hub.md, "Limits").
MAX_GROUPS = 20_000
MAX_ROWS = 1_000_000  # rows one stats_rows statement may return (tests, benchmarks)
StatsBucketSize = Literal["minute", "hour", "day", "week", "month"]
GroupKey = Literal["site", "device", "camera", "gender", "age_band", "direction"]
# The dimensions every statistics row has, and their values (schemas: the API's enums).
_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "gender": GENDERS,
    "age_band": AGE_BANDS,
    "direction": DIRECTIONS,
}
_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
# Times the API accepts: later ones could not be stepped through without overflowing.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class Filters:
    """A WHERE clause built from optional filters, with numbered parameters."""

    def __init__(self, *preset: object) -> None:
        self.clauses: list[str] = []
        self.args: list[object] = list(preset)

    def add(self, sql: str, *values: object) -> None:
        """Append ``sql`` whose ``{}`` placeholders become the next parameter numbers."""
        numbers = [f"${len(self.args) + i + 1}" for i in range(len(values))]
        self.clauses.append(sql.format(*numbers))
        self.args.extend(values)

    def where(self) -> str:
        """The clause, or nothing when no filter was added."""
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""


# --- time buckets ----------------------------------------------------------------------------


def _truncate(moment: datetime, bucket: StatsBucketSize) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if bucket == "minute":
        return moment
    moment = moment.replace(minute=0)
    if bucket == "hour":
        return moment
    moment = moment.replace(hour=0)
    if bucket == "week":  # ISO weeks start on Monday, as PostgreSQL's date_trunc('week')
        return moment - timedelta(days=moment.weekday())
    return moment.replace(day=1) if bucket == "month" else moment


def _next(moment: datetime, bucket: StatsBucketSize) -> datetime:
    if bucket == "month":
        year, month = (
            (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        )
        return moment.replace(year=year, month=month)
    if bucket == "week":
        return moment + timedelta(days=7)
    return moment + _STEP[bucket]


def _ceil(moment: datetime, bucket: StatsBucketSize) -> datetime:
    floor = _truncate(moment, bucket)
    return floor if floor == moment else _next(floor, bucket)


def _count(first: datetime, end: datetime, bucket: StatsBucketSize) -> int:
    if bucket == "month":
        months = (end.year - first.year) * 12 + end.month - first.month
        return months + (1 if end > first.replace(year=end.year, month=end.month) else 0)
    step = timedelta(days=7) if bucket == "week" else _STEP[bucket]
    return max(0, -(-(end - first) // step))


def bucket_starts(start: datetime, end: datetime, bucket: StatsBucketSize) -> list[datetime]:
    """Every bucket overlapping ``[start, end)``, so empty ones show as zeros."""
    first = _truncate(start, bucket)
    count = _count(first, end.astimezone(UTC), bucket)
    if count > MAX_BUCKETS:
        raise ValueError(f"{count} {bucket} buckets exceed {MAX_BUCKETS}; narrow the range")
    starts = []
    moment = first
    while moment < end:
        starts.append(moment)
        moment = _next(moment, bucket)
    return starts


class TooLargeError(ValueError):
    """An answer over a cost limit, refused before it is read (estimated) or while it
    is (counted): the API answers 422 with this message."""


def check_range(start: datetime, end: datetime) -> None:
    """``ValueError`` unless ``start < end`` and both lie in the years the API serves."""
    if start >= end:
        raise ValueError("start must be before end")
    if start < EARLIEST or end > LATEST:
        raise ValueError(f"times must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")


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


# --- the statistics statement ----------------------------------------------------------------

_MEASURES = """count(*) AS events, count(*) FILTER (WHERE e.return_of IS NULL) AS visitors,
       sum(e.age::double precision) AS age_sum, count(e.age) AS age_n,
       sum(e.dwell_s::double precision) AS dwell_sum"""
_SUMS = """sum(r.events) AS events, sum(r.visitors) AS visitors, sum(r.age_sum) AS age_sum,
       sum(r.age_n) AS age_n, sum(r.dwell_sum) AS dwell_sum"""


@dataclass(frozen=True, slots=True)
class StatsFilter:
    """Which events count: by device, camera, site (from ``cameras``) and dimensions."""

    device_id: str | None = None
    camera_id: str | None = None
    site: str | None = None
    gender: str | None = None
    age_band: str | None = None
    direction: str | None = None


@dataclass(slots=True)
class _Statement:
    """Builds one statistics statement: ``$1`` is the bucket size."""

    bucket: StatsBucketSize
    filters: StatsFilter
    per_camera: bool
    args: list[object] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    _filter_params: dict[str, str] = field(default_factory=dict)
    _pending: dict[str, tuple[list[str], list[datetime]]] = field(default_factory=dict)
    _pending_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Plain: read the fleet-wide rollups (no device or camera dimension) where they answer.
    fleet: bool = False

    def __post_init__(self) -> None:
        self.args.append(self.bucket)
        for name in ("device_id", "camera_id", "site", "gender", "age_band", "direction"):
            value = getattr(self.filters, name)
            if value is not None:
                self._filter_params[name] = self.param(value)

    def param(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def _where(self, alias: str, raw: bool) -> str:
        f, a = self._filter_params, alias
        sql = ""
        if "device_id" in f:
            sql += f" AND {a}.device_id = {f['device_id']}"
        if "camera_id" in f:
            sql += f" AND {a}.camera_id = {f['camera_id']}"
        if "site" in f:
            sql += (
                f" AND ({a}.device_id, {a}.camera_id) IN "
                f"(SELECT device_id, camera_id FROM cameras WHERE site = {f['site']})"
            )
        if "gender" in f:
            column = f"coalesce({a}.gender, 'unknown')" if raw else f"{a}.gender"
            sql += f" AND {column} = {f['gender']}"
        if "age_band" in f:
            sql += f" AND {a}.age_band = {f['age_band']}"
        if "direction" in f:
            column = f"coalesce({a}.direction, 'none')" if raw else f"{a}.direction"
            sql += f" AND {column} = {f['direction']}"
        return sql

    def _dims(self, alias: str, raw: bool) -> tuple[str, str]:
        """Select list of the dimensions and the GROUP BY positions."""
        camera = f"{alias}.device_id, {alias}.camera_id, " if self.per_camera else ""
        if raw:
            dims = f"{camera}coalesce({alias}.gender, 'unknown') AS gender, {alias}.age_band, "
            dims += f"coalesce({alias}.direction, 'none') AS direction"
        else:
            dims = f"{camera}{alias}.gender, {alias}.age_band, {alias}.direction"
        count = 6 if self.per_camera else 4
        return dims, ", ".join(str(i) for i in range(1, count + 1))

    def raw(self, lo: datetime, hi: datetime) -> None:
        """Events with ``lo <= last_seen < hi``."""
        dims, group = self._dims("e", raw=True)
        self.branches.append(
            f"""SELECT date_trunc($1, e.last_seen, 'UTC') AS bucket, {dims}, {_MEASURES}
FROM person_events e
WHERE e.last_seen >= {self.param(lo)} AND e.last_seen < {self.param(hi)}{self._where("e", True)}
GROUP BY {group}"""
        )

    def rollup(self, source: str, lo: datetime, hi: datetime, exclude: str = "") -> None:
        """Rollup rows with ``lo <= bucket < hi``, without those ``exclude`` names."""
        dims, group = self._dims("r", raw=False)
        self.branches.append(
            f"""SELECT date_trunc($1, r.bucket, 'UTC') AS bucket, {dims}, {_SUMS}
FROM {source} r
WHERE r.bucket >= {self.param(lo)} AND r.bucket < {self.param(hi)}{self._where("r", False)}
{f"AND {exclude}" if exclude else ""}
GROUP BY {group}"""
        )

    def set_pending(self, hours: Sequence[tuple[str, datetime]], daily_mark: datetime) -> None:
        """Plain: the (device, hour)s below the hourly watermark that late events changed
        and the hub has not re-aggregated yet (``rollup_pending_hours``), read in the same
        snapshot. Their rollup rows are stale, so they are read from raw events, as the
        views do; usually there are none, and the statement has no such branches."""
        days = sorted({(d, h.replace(hour=0)) for d, h in hours if h.replace(hour=0) < daily_mark})
        for name, pairs in (("hours", hours), ("days", days)):
            if pairs:
                self._pending[name] = ([d for d, _ in pairs], [t for _, t in pairs])

    def _pending_params(self, name: str) -> tuple[str, str] | None:
        """The parameters holding pending hours or days (added on first use, as a
        parameter no branch uses would have no type)."""
        if name not in self._pending:
            return None
        if name not in self._pending_names:
            devices, times = self._pending[name]
            self._pending_names[name] = (self.param(devices), self.param(times))
        return self._pending_names[name]

    def _not_pending(self, days: bool) -> str:
        pending = self._pending_params("days" if days else "hours")
        if pending is None:
            return ""
        devices, buckets = pending
        return f"""NOT EXISTS (SELECT 1 FROM unnest({devices}::text[], {buckets}::timestamptz[])
                    AS q(device_id, bucket)
                  WHERE q.device_id = r.device_id AND q.bucket = r.bucket)"""

    def pending_raw(self, lo: datetime, hi: datetime) -> None:
        """Plain: the pending (device, hour)s in ``[lo, hi)``, from raw events."""
        pending = self._pending_params("hours")
        if pending is None:
            return
        devices, hours = pending
        dims, group = self._dims("e", raw=True)
        self.branches.append(
            f"""SELECT date_trunc($1, e.last_seen, 'UTC') AS bucket, {dims}, {_MEASURES}
FROM unnest({devices}::text[], {hours}::timestamptz[]) AS p(device_id, hour)
JOIN person_events e ON e.device_id = p.device_id
 AND e.last_seen >= p.hour AND e.last_seen < p.hour + interval '1 hour'
WHERE p.hour >= {self.param(lo)} AND p.hour < {self.param(hi)}{self._where("e", True)}
GROUP BY {group}"""
        )

    def pending_day_hours(self, lo: datetime, hi: datetime) -> None:
        """Plain: the hourly rollups of the (device, day)s holding pending hours, but for
        those hours (their daily rollup is stale as a whole)."""
        pending = self._pending_params("days")
        if pending is None:
            return
        devices, days = pending
        dims, group = self._dims("r", raw=False)
        self.branches.append(
            f"""SELECT date_trunc($1, r.bucket, 'UTC') AS bucket, {dims}, {_SUMS}
FROM unnest({devices}::text[], {days}::timestamptz[]) AS p(device_id, day)
JOIN stats_hourly_rollup r ON r.device_id = p.device_id
 AND r.bucket >= p.day AND r.bucket < p.day + interval '1 day'
WHERE p.day >= {self.param(lo)} AND p.day < {self.param(hi)}{self._where("r", False)}
  AND {self._not_pending(days=False)}
GROUP BY {group}"""
        )

    def _fleet_answers(self) -> bool:
        """Plain: whether the fleet-wide rollups answer this statement: no device, camera
        or site filter, no per-camera grouping, and no pending late-event hours (whose
        device's rollup rows must be left out)."""
        return self.fleet and not self.per_camera and not self._pending

    def plain_hourly(self, lo: datetime, hi: datetime, hourly_mark: datetime) -> None:
        """What the plain ``stats_hourly`` view answers for ``[lo, hi)``."""
        below = min(hi, hourly_mark)
        if lo < below and self._fleet_answers():
            self.rollup("stats_hourly_fleet_rollup", lo, below)
        elif lo < below:
            self.rollup("stats_hourly_rollup", lo, below, self._not_pending(days=False))
            self.pending_raw(lo, below)
        above = max(lo, hourly_mark)
        if above < hi:
            self.raw(above, hi)

    def plain_daily(
        self, lo: datetime, hi: datetime, hourly_mark: datetime, daily_mark: datetime
    ) -> None:
        """What the plain ``stats_daily`` view answers for ``[lo, hi)``."""
        below = min(hi, daily_mark)
        if lo < below and self._fleet_answers():
            self.rollup("stats_daily_fleet_rollup", lo, below)
        elif lo < below:
            self.rollup("stats_daily_rollup", lo, below, self._not_pending(days=True))
            self.pending_day_hours(lo, below)
            self.pending_raw(lo, below)
        above = max(lo, daily_mark)
        if above < hi:
            self.plain_hourly(above, hi, hourly_mark)

    def sql(self, group_site: bool) -> str:
        camera = "s.device_id, s.camera_id" if self.per_camera else "NULL::text, NULL::text"
        site = "c.site" if group_site else "NULL::text"
        join = (
            "LEFT JOIN cameras c ON c.device_id = s.device_id AND c.camera_id = s.camera_id"
            if group_site
            else ""
        )
        return f"""SELECT s.bucket, {camera.split(", ")[0]} AS device_id,
       {camera.split(", ")[1]} AS camera_id, {site} AS site,
       s.gender, s.age_band, s.direction, sum(s.events)::bigint AS events,
       sum(s.visitors)::bigint AS visitors, coalesce(sum(s.age_sum), 0) AS age_sum,
       sum(s.age_n)::bigint AS age_n, coalesce(sum(s.dwell_sum), 0) AS dwell_sum
FROM ({" UNION ALL ".join(self.branches)}) AS s {join}
GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
LIMIT {MAX_ROWS + 1}"""

    def cells_sql(self, columns: Sequence[str], limit: int) -> str:
        """One row per bucket and group (the ``columns`` asked for, others null), with the
        sums and each gender's, age band's and direction's events: the answer's cells,
        summed in the database, so the rows read are as many as the answer holds (the
        81 gender x age band x direction rows of :meth:`sql` would be up to 81 times
        more). At most ``limit + 1`` rows, so no estimate can make the hub read more."""
        exprs = {"site": "c.site"} | {
            name: f"s.{name}" for name in ("device_id", "camera_id", *_DIMENSIONS)
        }
        keys = ", ".join(
            f"{exprs[name] if name in columns else 'NULL::text'} AS {name}"
            for name in ("device_id", "camera_id", "site", *_DIMENSIONS)
        )
        marginals = ",\n       ".join(
            f"coalesce(sum(s.events) FILTER (WHERE s.{name} = '{value}'), 0)::bigint AS {name}_{i}"
            for name, values in _DIMENSIONS.items()
            for i, value in enumerate(values)
        )
        join = (
            "LEFT JOIN cameras c ON c.device_id = s.device_id AND c.camera_id = s.camera_id"
            if "site" in columns
            else ""
        )
        return f"""SELECT s.bucket, {keys},
       sum(s.events)::bigint AS events, sum(s.visitors)::bigint AS visitors,
       coalesce(sum(s.age_sum), 0) AS age_sum, sum(s.age_n)::bigint AS age_n,
       coalesce(sum(s.dwell_sum), 0) AS dwell_sum,
       {marginals}
FROM ({" UNION ALL ".join(self.branches)}) AS s {join}
GROUP BY 1, 2, 3, 4, 5, 6, 7
LIMIT {int(limit) + 1}"""


@dataclass(slots=True)
class StatsRow:
    """One bucket's people of one gender, age band and direction (and, when grouped,
    device, camera and site), with the sums behind averages: ``visitors`` are first
    visits (``returns = events - visitors``)."""

    bucket: datetime
    gender: str
    age_band: str
    direction: str
    events: int
    visitors: int
    age_sum: float
    age_n: int
    dwell_sum: float
    device_id: str | None = None
    camera_id: str | None = None
    site: str | None = None


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
    if marks is not None:
        pending = await conn.fetch("SELECT device_id, hour FROM rollup_pending_hours")
        statement.set_pending([(r["device_id"], r["hour"]) for r in pending], marks[1])
        f = statement.filters
        statement.fleet = f.device_id is None and f.camera_id is None and f.site is None
        if statement.fleet:  # a database migrated before 007 has none
            statement.fleet = await conn.fetchval(
                "SELECT to_regclass('stats_daily_fleet_rollup') IS NOT NULL"
            )
    for span in plan_spans(start, end, statement.bucket):
        if span.source == "person_events":
            statement.raw(span.start, span.end)
        elif marks is None:
            statement.rollup(span.source, span.start, span.end)
        elif span.source == "stats_hourly":
            statement.plain_hourly(span.start, span.end, marks[0])
        else:
            statement.plain_daily(span.start, span.end, *marks)


async def stats_rows(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
    *,
    gender: str | None = None,
    age_band: str | None = None,
    direction: str | None = None,
    per_camera: bool = False,
    per_site: bool = False,
    direct: bool = True,
) -> list[StatsRow]:
    """Every measure per bucket, gender, age band and direction over ``[start, end)``, by
    each event's ``last_seen``: one statement over the spans :func:`plan_spans` picks.
    ``per_camera`` adds device and camera, ``per_site`` the camera's registered site.
    ``direct=False`` reads the plain backend's views instead (for comparing plans)."""
    filters = StatsFilter(device_id, camera_id, site, gender, age_band, direction)
    statement = _Statement(bucket, filters, per_camera or per_site)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        await _plan(conn, statement, start, end, direct)
        rows = await conn.fetch(statement.sql(per_site), *statement.args)
    if len(rows) > MAX_ROWS:
        raise ValueError("the answer would be too large; narrow the range or the grouping")
    return [
        StatsRow(
            row["bucket"],
            row["gender"],
            row["age_band"],
            row["direction"],
            row["events"],
            row["visitors"],
            row["age_sum"],
            row["age_n"],
            row["dwell_sum"],
            row["device_id"],
            row["camera_id"],
            row["site"],
        )
        for row in rows
    ]


# A cell of :meth:`_Statement.cells_sql`: the bucket and six group columns, then its
# measures: these five sums, then each gender's, age band's and direction's events.
_CELL_KEYS = 7
_SUMS_WIDTH = 5 + sum(len(values) for values in _DIMENSIONS.values())


@dataclass(slots=True)
class Tally:
    """Sums behind a :class:`Counts` (averages are sums over counts), as one flat list in
    a cell's order: adding a cell is one pass over 20 numbers (an answer may have tens of
    thousands of cells)."""

    sums: list[Any] = field(default_factory=lambda: [0] * _SUMS_WIDTH)

    def add(self, measures: Sequence[Any]) -> None:
        """Add one cell's measures (or another tally's ``sums``)."""
        self.sums = [a + b for a, b in zip(self.sums, measures, strict=True)]

    def fields(self) -> dict[str, Any]:
        """The :class:`Counts` fields (averages rounded to 2 decimals)."""
        events, visitors, age_sum, age_n, dwell_sum = self.sums[:5]
        out: dict[str, Any] = {
            "total": events,
            "visitors": visitors,
            "returns": events - visitors,
            "avg_age": round(age_sum / age_n, 2) if age_n else None,
            "avg_dwell_s": round(dwell_sum / events, 2) if events else None,
        }
        at = 5
        for name, values in (
            ("gender", GENDERS),
            ("age", AGE_BANDS),
            ("direction", DIRECTIONS),
        ):
            out[name] = dict(zip(values, self.sums[at : at + len(values)], strict=True))
            at += len(values)
        return out


_GROUP_FIELDS: dict[str, tuple[str, ...]] = {
    "site": ("site",),
    "device": ("device_id",),
    "camera": ("device_id", "camera_id"),
    "gender": ("gender",),
    "age_band": ("age_band",),
    "direction": ("direction",),
}


def group_key(
    cell: Mapping[str, Any], group_by: Sequence[str]
) -> tuple[tuple[str, str | None], ...]:
    """The cell's group as (name, value) pairs, in ``group_by`` order."""
    pairs: dict[str, str | None] = {}
    for name in group_by:
        for column in _GROUP_FIELDS[name]:
            pairs[column] = cell[column]
    return tuple(pairs.items())


def _sort_key(key: tuple[tuple[str, str | None], ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, value or "") for _, value in key)


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
        if device_id is not None:
            registry.add("device_id = {}", device_id)
        if camera_id is not None:
            registry.add("camera_id = {}", camera_id)
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


async def stats_cells(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    filters: StatsFilter,
    group_by: Sequence[str],
    limit: int,
) -> list[asyncpg.Record]:
    """Per bucket and group of ``group_by``, the measures (:meth:`_Statement.cells_sql`);
    :class:`TooLargeError` when there are more than ``limit`` cells, having read one more."""
    columns = [column for name in group_by for column in _GROUP_FIELDS[name]]
    per_camera = bool({"site", "device", "camera"} & set(group_by))
    statement = _Statement(bucket, filters, per_camera)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        await _plan(conn, statement, start, end)
        rows: list[asyncpg.Record] = await conn.fetch(
            statement.cells_sql(columns, limit), *statement.args
        )
    if len(rows) > limit:
        raise TooLargeError(
            f"the answer holds more than {limit:,} bucket x group pairs "
            "(HUB_STATS_MAX_PAIRS); shorten the range, use a larger bucket, group by fewer "
            "dimensions, or filter"
        )
    return rows


async def stats(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
    *,
    gender: str | None = None,
    age_band: str | None = None,
    direction: str | None = None,
    group_by: Sequence[GroupKey] = (),
    max_pairs: int = MAX_GROUPS,
) -> tuple[StatsTotals, list[StatsBucket]]:
    """People per bucket, plus the totals of the range; with ``group_by`` each of them
    also per group (site, device, camera, gender, age band, direction).

    The answer's size is estimated first (buckets x groups, :func:`check_stats_size`)
    and refused over ``max_pairs`` before anything is aggregated; the statement then
    returns one row per cell of the answer, at most ``max_pairs + 1``."""
    starts = bucket_starts(start, end, bucket)
    group_by = list(dict.fromkeys(group_by))
    filters = StatsFilter(device_id, camera_id, site, gender, age_band, direction)
    fleet = None
    if {"site", "device", "camera"} & set(group_by):
        fleet = await fleet_size(pool, device_id, camera_id, site)
    check_stats_size(len(starts), bucket, group_by, filters, fleet, max_pairs)
    cells = await stats_cells(pool, start, end, bucket, filters, group_by, max_pairs)
    # Summing and building up to max_pairs groups is CPU work of a second or more at the
    # limit: in a worker thread the event loop (ingest, other requests) keeps its turns.
    return await asyncio.to_thread(_stats_answer, starts, cells, group_by)


def _stats_answer(
    starts: Sequence[datetime], cells: list[asyncpg.Record], group_by: Sequence[str]
) -> tuple[StatsTotals, list[StatsBucket]]:
    """The buckets and totals from the cells (which it empties, to free them early)."""
    tallies = {s: Tally() for s in starts}
    grouped: dict[datetime, dict[Any, Tally]] = {s: {} for s in starts}
    total_groups: dict[Any, Tally] = {}
    for cell in cells:
        values = tuple(cell)
        measures = values[_CELL_KEYS:]
        tallies[values[0]].add(measures)
        if group_by:  # one cell per bucket and group
            key = group_key(cell, group_by)
            grouped[values[0]][key] = Tally(list(measures))
            total_groups.setdefault(key, Tally()).add(measures)
    cells.clear()
    total = Tally()
    for tally in tallies.values():
        total.add(tally.sums)

    def groups(by_key: dict[Any, Tally]) -> list[StatsGroup] | None:
        if not group_by:
            return None
        return [
            StatsGroup(key=dict(key), **by_key[key].fields())
            for key in sorted(by_key, key=_sort_key)
        ]

    buckets = [
        StatsBucket(start=s, groups=groups(grouped[s]), **tallies[s].fields()) for s in starts
    ]
    return StatsTotals(groups=groups(total_groups), **total.fields()), buckets


# --- events ------------------------------------------------------------------------------------


def encode_cursor(last_seen: datetime, event_id: uuid.UUID) -> str:
    """An opaque cursor for the row after which the next page starts."""
    raw = json.dumps([last_seen.isoformat(), str(event_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor from :func:`encode_cursor`; ``ValueError`` if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, event_id = json.loads(raw)
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment, uuid.UUID(event_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which stored events to list or export."""

    start: datetime | None = None
    end: datetime | None = None
    device_id: str | None = None
    camera_id: str | None = None
    site: str | None = None
    gender: str | None = None
    age_band: str | None = None
    direction: str | None = None
    returning: bool | None = None

    def apply(self, filters: Filters) -> Filters:
        """Add these conditions to ``filters``."""
        if self.start is not None:
            filters.add("last_seen >= {}", self.start)
        if self.end is not None:
            filters.add("last_seen < {}", self.end)
        if self.device_id is not None:
            filters.add("device_id = {}", self.device_id)
        if self.camera_id is not None:
            filters.add("camera_id = {}", self.camera_id)
        if self.site is not None:
            filters.add(
                "(device_id, camera_id) IN (SELECT device_id, camera_id FROM cameras "
                "WHERE site = {})",
                self.site,
            )
        if self.gender is not None:
            filters.add("coalesce(gender, 'unknown') = {}", self.gender)
        if self.age_band is not None:
            filters.add("age_band = {}", self.age_band)
        if self.direction is not None:
            filters.add("coalesce(direction, 'none') = {}", self.direction)
        if self.returning is not None:
            filters.clauses.append(
                "return_of IS NOT NULL" if self.returning else "return_of IS NULL"
            )
        return filters


def _record(row: asyncpg.Record) -> EventRecord:
    return EventRecord.model_validate({**dict(row), "models": json.loads(row["models"])})


async def _event_rows(
    pool: asyncpg.Pool,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    where: EventFilter,
) -> list[asyncpg.Record]:
    filters = Filters()
    if after is not None:
        filters.add("(last_seen, event_id) > ({}, {})", *after)
    where.apply(filters)
    return list(
        await pool.fetch(
            f"""SELECT * FROM person_events {filters.where()}
                ORDER BY last_seen, event_id LIMIT {int(limit)}""",
            *filters.args,
        )
    )


async def events_page(
    pool: asyncpg.Pool,
    limit: int,
    cursor: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    device_id: str | None = None,
    camera_id: str | None = None,
    *,
    where: EventFilter | None = None,
) -> EventsPage:
    """One page in ``(last_seen, event_id)`` order: stable even while events arrive."""
    where = where or EventFilter(start, end, device_id, camera_id)
    after = decode_cursor(cursor) if cursor is not None else None
    rows = await _event_rows(pool, limit + 1, after, where)
    events = [_record(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = events[-1] if events else None
    next_cursor = encode_cursor(last.last_seen, last.event_id) if more and last else None
    return EventsPage(events=events, next_cursor=next_cursor)


async def event_batches(
    pool: asyncpg.Pool, where: EventFilter, batch_rows: int
) -> AsyncIterator[list[asyncpg.Record]]:
    """Every matching event, oldest first, ``batch_rows`` at a time: each batch is one
    short keyset query, so an export of any length holds one batch in memory and no
    connection or transaction between batches."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        rows = await _event_rows(pool, batch_rows, after, where)
        if rows:
            yield rows
        if len(rows) < batch_rows:
            return
        after = (rows[-1]["last_seen"], rows[-1]["event_id"])


EVENT_COLUMNS = (
    "event_id",
    "device_id",
    "camera_id",
    "track_id",
    "first_seen",
    "last_seen",
    "dwell_s",
    "gender",
    "gender_confidence",
    "age",
    "age_low",
    "age_high",
    "age_confidence",
    "age_band",
    "direction",
    "crops",
    "return_of",
    "models",
    "received_at",
)


# --- devices -----------------------------------------------------------------------------------

_DEVICES = """
SELECT device_id, d.first_seen, d.last_seen, d.last_received_at, coalesce(d.events, 0) AS events,
       s.state, s.at AS status_at, s.received_at AS status_received_at, s.agent_version,
       s.models, s.cameras, s.config_version, s.config_error, s.outbox_dropped,
       h.at AS health_at, h.received_at AS health_received_at, h.cpu_percent, h.memory_mb,
       h.temperature_c, h.outbox_depth, h.outbox_dropped AS health_outbox_dropped,
       h.cameras AS health_cameras, h.latency_ms
FROM devices d
FULL JOIN device_status s USING (device_id)
FULL JOIN device_health h USING (device_id)
"""


def _device(row: asyncpg.Record) -> Device:
    heard = [t for t in (row["last_received_at"], row["status_received_at"]) if t]
    health = None
    if row["health_at"] is not None:
        heard.append(row["health_received_at"])
        health = {
            "at": row["health_at"],
            "received_at": row["health_received_at"],
            "cpu_percent": row["cpu_percent"],
            "memory_mb": row["memory_mb"],
            "temperature_c": row["temperature_c"],
            "outbox_depth": row["outbox_depth"],
            "outbox_dropped": row["health_outbox_dropped"],
            "cameras": json.loads(row["health_cameras"]),
            "latency_ms": json.loads(row["latency_ms"]),
        }
    return Device.model_validate(
        {
            "device_id": row["device_id"],
            "first_seen": row["first_seen"],
            "last_seen": row["last_seen"],
            "last_received_at": row["last_received_at"],
            "events": row["events"],
            "state": row["state"] or "unknown",
            "status_at": row["status_at"],
            "status_received_at": row["status_received_at"],
            "last_heard_at": max(heard) if heard else None,
            "agent_version": row["agent_version"],
            "models": json.loads(row["models"]) if row["models"] else {},
            "cameras": json.loads(row["cameras"]) if row["cameras"] else [],
            "config_version": row["config_version"],
            "config_error": row["config_error"],
            "outbox_dropped": row["outbox_dropped"] or 0,
            "health": health,
        }
    )


async def devices(
    pool: asyncpg.Pool, state: str | None = None, device_id: str | None = None
) -> list[Device]:
    """Every device that sent events, a status or health: events, state, versions, health."""
    filters = Filters()
    if device_id is not None:
        filters.add("device_id = {}", device_id)
    if state == "unknown":
        filters.clauses.append("s.state IS NULL")
    elif state is not None:
        filters.add("s.state = {}", state)
    rows = await pool.fetch(f"{_DEVICES} {filters.where()} ORDER BY device_id", *filters.args)
    return [_device(row) for row in rows]


async def event_count(pool: asyncpg.Pool) -> int:
    """How many events are stored (``up`` waits for this to settle)."""
    return int(await pool.fetchval("SELECT count(*) FROM person_events"))


# --- cameras -----------------------------------------------------------------------------------

_CAMERAS = """
SELECT c.*, cam.state, cam.fps, s.state AS device_state
FROM cameras c
LEFT JOIN device_status s ON s.device_id = c.device_id
LEFT JOIN LATERAL (
    SELECT x->>'state' AS state, (x->>'fps')::double precision AS fps
    FROM jsonb_array_elements(s.cameras) AS x WHERE x->>'camera_id' = c.camera_id LIMIT 1
) cam ON true
"""


def _camera(row: asyncpg.Record) -> Camera:
    data = dict(row)
    line = data.pop("counting_line")
    data["counting_line"] = json.loads(line) if line else None
    data["device_state"] = data["device_state"] or "unknown"
    return Camera.model_validate(data)


async def cameras(
    pool: asyncpg.Pool,
    site: str | None = None,
    device_id: str | None = None,
    camera_id: str | None = None,
) -> list[Camera]:
    """Registered cameras (by site and device), with their state from the device status."""
    filters = Filters()
    if site is not None:
        filters.add("c.site = {}", site)
    if device_id is not None:
        filters.add("c.device_id = {}", device_id)
    if camera_id is not None:
        filters.add("c.camera_id = {}", camera_id)
    rows = await pool.fetch(
        f"{_CAMERAS} {filters.where()} ORDER BY c.device_id, c.camera_id", *filters.args
    )
    return [_camera(row) for row in rows]


def _line(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


async def create_camera(pool: asyncpg.Pool, camera: CameraCreate) -> Camera | None:
    """Register a camera; None when it is registered already."""
    line = camera.counting_line.model_dump(mode="json") if camera.counting_line else None
    created = await pool.fetchval(
        """INSERT INTO cameras (device_id, camera_id, name, site, location, counting_line)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb)
           ON CONFLICT (device_id, camera_id) DO NOTHING RETURNING true""",
        camera.device_id,
        camera.camera_id,
        camera.name,
        camera.site,
        camera.location,
        _line(line),
    )
    if not created:
        return None
    found = await cameras(pool, device_id=camera.device_id, camera_id=camera.camera_id)
    return found[0]


async def update_camera(
    pool: asyncpg.Pool, device_id: str, camera_id: str, update: CameraUpdate
) -> Camera | None:
    """Change the fields ``update`` sets (null clears); None when not registered."""
    changes = update.model_dump(mode="json", exclude_unset=True)
    filters = Filters(device_id, camera_id)
    sets = []
    for name in ("name", "site", "location", "counting_line"):
        if name in changes:
            value = _line(changes[name]) if name == "counting_line" else changes[name]
            cast = "::jsonb" if name == "counting_line" else ""
            filters.args.append(value)
            sets.append(f"{name} = ${len(filters.args)}{cast}")
    sets.append("updated_at = now()")
    found = await pool.fetchval(
        f"""UPDATE cameras SET {", ".join(sets)} WHERE device_id = $1 AND camera_id = $2
            RETURNING true""",
        *filters.args,
    )
    if not found:
        return None
    return (await cameras(pool, device_id=device_id, camera_id=camera_id))[0]


async def delete_camera(pool: asyncpg.Pool, device_id: str, camera_id: str) -> bool:
    """Unregister a camera (its events stay); whether it was registered."""
    deleted = await pool.fetchval(
        "DELETE FROM cameras WHERE device_id = $1 AND camera_id = $2 RETURNING true",
        device_id,
        camera_id,
    )
    return bool(deleted)


# --- occupancy ---------------------------------------------------------------------------------


async def occupancy(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
    group_by: Sequence[str] = (),
    *,
    max_pairs: int = MAX_GROUPS,
) -> list[OccupancyBucket]:
    """Occupancy per bucket (and group) over the minutes in ``[start, end)``; refused
    (:class:`TooLargeError`) when buckets x groups may exceed ``max_pairs``, estimated as for
    the statistics before the query, and counted by its ``LIMIT``."""
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
    if device_id is not None:
        filters.add("o.device_id = {}", device_id)
    if camera_id is not None:
        filters.add("o.camera_id = {}", camera_id)
    if site is not None:
        filters.add("c.site = {}", site)
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
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
) -> list[CurrentOccupancy]:
    """Samples filtered and labelled with their camera's registered site and name."""
    registry = {
        (r["device_id"], r["camera_id"]): (r["site"], r["name"])
        for r in await pool.fetch("SELECT device_id, camera_id, site, name FROM cameras")
    }
    out = []
    for s in samples:
        where, name = registry.get((s["device_id"], s["camera_id"]), (None, None))
        if device_id is not None and s["device_id"] != device_id:
            continue
        if camera_id is not None and s["camera_id"] != camera_id:
            continue
        if site is not None and where != site:
            continue
        out.append(
            CurrentOccupancy(
                device_id=s["device_id"],
                camera_id=s["camera_id"],
                people=s["people"],
                at=s["at"],
                site=where,
                name=name,
            )
        )
    return sorted(out, key=lambda c: (c.device_id, c.camera_id))


# --- the daily report --------------------------------------------------------------------------


def day_range(day: date) -> tuple[datetime, datetime]:
    """The UTC day as ``[start, end)``."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


async def daily_stats(
    pool: asyncpg.Pool,
    day: date,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
    *,
    max_pairs: int = MAX_GROUPS,
) -> list[CameraDay]:
    """Per camera, one UTC day: totals, gender, age bands, first visits and returns,
    average age and dwell, and the same for each of its 24 hours. Registered cameras
    that saw nobody are included with zeros.

    Each camera is 25 sets of counts: a fleet too large for one report (cameras x 25
    over ``max_pairs``, counted before anything is aggregated) is refused, :class:`TooLargeError`,
    asking for a site or device filter."""
    start, end = day_range(day)
    check_range(start, end)
    fleet = await fleet_size(pool, device_id, camera_id, site)
    if fleet.cameras * 25 > max_pairs:
        raise _too_large(
            "the report",
            fleet.cameras * 25,
            max_pairs,
            f"{fleet.cameras:,} cameras x 24 hours and a total",
            "filter by site, device_id or camera_id",
        )
    filters = StatsFilter(device_id, camera_id, site)
    cells = await stats_cells(pool, start, end, "hour", filters, ["camera"], max_pairs)
    registered = {
        (c.device_id, c.camera_id): c
        for c in await cameras(pool, site=site, device_id=device_id, camera_id=camera_id)
    }
    return await asyncio.to_thread(_daily_answer, start, cells, registered)


def _daily_answer(
    start: datetime, cells: list[asyncpg.Record], registered: dict[tuple[str, str], Camera]
) -> list[CameraDay]:
    """The report from the cells (in a worker thread, as :func:`_stats_answer`)."""
    hours = [start + timedelta(hours=h) for h in range(24)]
    tallies: dict[tuple[str, str], tuple[Tally, dict[datetime, Tally]]] = {
        key: (Tally(), {}) for key in registered
    }
    for cell in cells:  # one per camera and hour
        total, by_hour = tallies.setdefault((cell["device_id"], cell["camera_id"]), (Tally(), {}))
        measures = tuple(cell)[_CELL_KEYS:]
        total.add(measures)
        by_hour[cell["bucket"]] = Tally(list(measures))
    report = []
    for key in sorted(tallies):
        total, by_hour = tallies[key]
        camera = registered.get(key)
        report.append(
            CameraDay(
                device_id=key[0],
                camera_id=key[1],
                name=camera.name if camera else None,
                site=camera.site if camera else None,
                location=camera.location if camera else None,
                totals=Counts(**total.fields()),
                hours=[
                    HourCounts(hour=i, start=h, **by_hour.get(h, Tally()).fields())
                    for i, h in enumerate(hours)
                ],
            )
        )
    return report
