"""Stored events: pages with cursors, and the batches an export streams."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from cloud_hub.queries.filters import Filters, StatsFilter
from cloud_hub.schemas import EventRecord, EventsPage
from edge_agent.contract import FLAT_EVENT_FIELDS


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
class EventFilter(StatsFilter):
    """Which stored events to list or export: as for the statistics, and by time
    (``last_seen``) and first visit or return."""

    start: datetime | None = None
    end: datetime | None = None
    returning: bool | None = None

    def apply(self, filters: Filters) -> Filters:
        """Add these conditions to ``filters``."""
        filters.add_if_given("last_seen >= {}", self.start)
        filters.add_if_given("last_seen < {}", self.end)
        filters.add_if_given("device_id = {}", self.device_id)
        filters.add_if_given("camera_id = {}", self.camera_id)
        filters.add_if_given(
            "(device_id, camera_id) IN (SELECT device_id, camera_id FROM cameras WHERE site = {})",
            self.site,
        )
        filters.add_if_given("coalesce(gender, 'unknown') = {}", self.gender)
        filters.add_if_given("age_band = {}", self.age_band)
        filters.add_if_given("coalesce(direction, 'none') = {}", self.direction)
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
    pool: asyncpg.Pool, limit: int, cursor: str | None = None, *, where: EventFilter
) -> EventsPage:
    """One page in ``(last_seen, event_id)`` order: stable even while events arrive."""
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


# An export's columns: the contract's flat event row (what `edge-agent analyze` writes too),
# with what only the hub knows, the age band beside the age and when it was received.
EVENT_COLUMNS: Final = (
    *FLAT_EVENT_FIELDS[: FLAT_EVENT_FIELDS.index("age_confidence") + 1],
    "age_band",
    *FLAT_EVENT_FIELDS[FLAT_EVENT_FIELDS.index("direction") :],
    "received_at",
)


async def event_count(pool: asyncpg.Pool) -> int:
    """How many events are stored (``up`` waits for this to settle)."""
    return int(await pool.fetchval("SELECT count(*) FROM person_events"))
