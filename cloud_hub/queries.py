"""The read path behind the API: statistics, event pages and devices."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from cloud_hub.schemas import Bucket, Counts, Device, EventRecord, EventsPage, StatsBucket

MAX_BUCKETS = 10_000
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


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


def _truncate(moment: datetime, bucket: Bucket) -> datetime:
    moment = moment.astimezone(UTC)
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if bucket == "day" else moment


def bucket_starts(start: datetime, end: datetime, bucket: Bucket) -> list[datetime]:
    """Every bucket overlapping ``[start, end)``, so empty hours show as zeros."""
    first, step = _truncate(start, bucket), _STEP[bucket]
    count = max(0, -(-(end - first) // step))
    if count > MAX_BUCKETS:
        raise ValueError(f"{count} {bucket} buckets exceed {MAX_BUCKETS}; narrow the range")
    return [first + i * step for i in range(count)]


async def stats(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: Bucket,
    device_id: str | None = None,
    camera_id: str | None = None,
) -> tuple[Counts, list[StatsBucket]]:
    """People per bucket by gender and age band, plus the totals of the range."""
    buckets = {s: StatsBucket(start=s) for s in bucket_starts(start, end, bucket)}
    filters = Filters(bucket)  # $1
    filters.add("last_seen >= {} AND last_seen < {}", start, end)
    if device_id is not None:
        filters.add("device_id = {}", device_id)
    if camera_id is not None:
        filters.add("camera_id = {}", camera_id)
    rows = await pool.fetch(
        f"""SELECT date_trunc($1, last_seen, 'UTC') AS bucket,
                   coalesce(gender, 'unknown') AS gender, age_band, count(*) AS n
            FROM person_events {filters.where()}
            GROUP BY 1, 2, 3""",
        *filters.args,
    )
    totals = Counts()
    for row in rows:
        buckets[row["bucket"]].add(row["gender"], row["age_band"], row["n"])
        totals.add(row["gender"], row["age_band"], row["n"])
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
