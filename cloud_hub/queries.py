"""The read path behind the API: statistics, event pages and devices."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg

from cloud_hub.schemas import Counts, Device, EventRecord, EventsPage, StatsBucket

MAX_BUCKETS = 10_000
StatsBucketSize = Literal["minute", "hour", "day"]
_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


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


def _truncate(moment: datetime, bucket: StatsBucketSize) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if bucket == "minute":
        return moment
    moment = moment.replace(minute=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def _ceil(moment: datetime, bucket: StatsBucketSize) -> datetime:
    floor = _truncate(moment, bucket)
    return floor if floor == moment else floor + _STEP[bucket]


def bucket_starts(start: datetime, end: datetime, bucket: StatsBucketSize) -> list[datetime]:
    """Every bucket overlapping ``[start, end)``, so empty hours show as zeros."""
    first, step = _truncate(start, bucket), _STEP[bucket]
    count = max(0, -(-(end - first) // step))
    if count > MAX_BUCKETS:
        raise ValueError(f"{count} {bucket} buckets exceed {MAX_BUCKETS}; narrow the range")
    return [first + i * step for i in range(count)]


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
    they serve only days and hours lying entirely inside the range (a day only for day
    buckets); the partial hours at either end, and minute buckets, come from raw events.
    Both views are exact up to the newest event (materialised below a watermark,
    aggregated from person_events above it), so no span depends on refresh timing.
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
    if bucket == "day" and days_from < days_to:
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


_RAW_BRANCH = """SELECT date_trunc({size}, last_seen, 'UTC') AS bucket,
       coalesce(gender, 'unknown') AS gender, age_band, coalesce(direction, 'none') AS direction,
       count(*) AS events, count(*) FILTER (WHERE return_of IS NULL) AS visitors,
       sum(age::double precision) AS age_sum, count(age) AS age_n,
       sum(dwell_s::double precision) AS dwell_sum
FROM person_events WHERE last_seen >= {lo} AND last_seen < {hi}{extra}
GROUP BY 1, 2, 3, 4"""
_ROLLUP_BRANCH = """SELECT date_trunc({size}, bucket, 'UTC') AS bucket,
       gender, age_band, direction, sum(events) AS events, sum(visitors) AS visitors,
       sum(age_sum) AS age_sum, sum(age_n) AS age_n, sum(dwell_sum) AS dwell_sum
FROM {source} WHERE bucket >= {lo} AND bucket < {hi}{extra}
GROUP BY 1, 2, 3, 4"""


@dataclass(slots=True)
class StatsRow:
    """One bucket's people of one gender, age band and direction, with the sums behind
    averages: ``visitors`` are first visits (``returns = events - visitors``)."""

    bucket: datetime
    gender: str
    age_band: str
    direction: str
    events: int
    visitors: int
    age_sum: float
    age_n: int
    dwell_sum: float


async def stats_rows(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
) -> list[StatsRow]:
    """Every measure per bucket, gender, age band and direction over ``[start, end)``, by
    each event's ``last_seen``: one statement over the spans :func:`plan_spans` picks."""
    args: list[object] = [bucket]

    def param(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    extra = ""
    if device_id is not None:
        extra += f" AND device_id = {param(device_id)}"
    if camera_id is not None:
        extra += f" AND camera_id = {param(camera_id)}"
    if site is not None:
        extra += (
            " AND (device_id, camera_id) IN "
            f"(SELECT device_id, camera_id FROM cameras WHERE site = {param(site)})"
        )
    branches = []
    for span in plan_spans(start, end, bucket):
        template = _RAW_BRANCH if span.source == "person_events" else _ROLLUP_BRANCH
        branches.append(
            template.format(
                size="$1",
                source=span.source,
                lo=param(span.start),
                hi=param(span.end),
                extra=extra,
            )
        )
    rows = await pool.fetch(
        f"""SELECT bucket, gender, age_band, direction, sum(events)::bigint AS events,
                   sum(visitors)::bigint AS visitors, coalesce(sum(age_sum), 0) AS age_sum,
                   sum(age_n)::bigint AS age_n, coalesce(sum(dwell_sum), 0) AS dwell_sum
            FROM ({" UNION ALL ".join(branches)}) AS spans
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""",
        *args,
    )
    return [StatsRow(**dict(row)) for row in rows]


async def stats(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
) -> tuple[Counts, list[StatsBucket]]:
    """People per bucket by gender and age band, plus the totals of the range."""
    buckets = {s: StatsBucket(start=s) for s in bucket_starts(start, end, bucket)}
    totals = Counts()
    for row in await stats_rows(pool, start, end, bucket, device_id, camera_id, site):
        buckets[row.bucket].add(row.gender, row.age_band, row.events)
        totals.add(row.gender, row.age_band, row.events)
    return totals, list(buckets.values())


def encode_cursor(last_seen: datetime, event_id: uuid.UUID) -> str:
    """An opaque cursor for the row after which the next page starts."""
    raw = json.dumps([last_seen.isoformat(), str(event_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor from :func:`encode_cursor`; ``ValueError`` if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, event_id = json.loads(raw)
        return datetime.fromisoformat(when), uuid.UUID(event_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


async def events_page(
    pool: asyncpg.Pool,
    limit: int,
    cursor: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    device_id: str | None = None,
    camera_id: str | None = None,
) -> EventsPage:
    """One page in ``(last_seen, event_id)`` order: stable even while events arrive."""
    filters = Filters()
    if cursor is not None:
        filters.add("(last_seen, event_id) > ({}, {})", *decode_cursor(cursor))
    if start is not None:
        filters.add("last_seen >= {}", start)
    if end is not None:
        filters.add("last_seen < {}", end)
    if device_id is not None:
        filters.add("device_id = {}", device_id)
    if camera_id is not None:
        filters.add("camera_id = {}", camera_id)
    rows = await pool.fetch(
        f"""SELECT * FROM person_events {filters.where()}
            ORDER BY last_seen, event_id LIMIT {int(limit) + 1}""",
        *filters.args,
    )
    events = [
        EventRecord.model_validate({**dict(row), "models": json.loads(row["models"])})
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    last = events[-1] if events else None
    next_cursor = encode_cursor(last.last_seen, last.event_id) if more and last else None
    return EventsPage(events=events, next_cursor=next_cursor)


async def devices(pool: asyncpg.Pool) -> list[Device]:
    """Every device with its first and last event time and how many events it sent."""
    rows = await pool.fetch("SELECT * FROM devices ORDER BY device_id")
    return [Device.model_validate(dict(row)) for row in rows]


async def event_count(pool: asyncpg.Pool) -> int:
    """How many events are stored (``up`` waits for this to settle)."""
    return int(await pool.fetchval("SELECT count(*) FROM person_events"))
