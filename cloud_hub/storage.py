"""The batch write path: one transaction stores a batch of events and its rejects.

Idempotent by construction: ``ON CONFLICT (event_id, last_seen) DO NOTHING`` makes a
redelivered event (same id, same ``last_seen``) a no-op, so the hub can acknowledge MQTT
messages only after this commits. The key has ``last_seen`` because hypertables and
partitioned tables need their time column in every unique key. The same statement runs
on TimescaleDB and on plain PostgreSQL; neither needs more than this one statement per
batch (rollups are kept by TimescaleDB, or by the hub from a statement trigger's log).
"""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass

import asyncpg

from edge_agent.contract import PersonEvent

_INSERT_EVENTS = """
WITH new AS (
    INSERT INTO person_events (
        event_id, device_id, camera_id, track_id, first_seen, last_seen, dwell_s,
        gender, gender_confidence, age, age_low, age_high, age_confidence,
        direction, crops, models, return_of)
    SELECT e.event_id, e.device_id, e.camera_id, e.track_id, e.first_seen, e.last_seen,
           e.dwell_s, e.gender, e.gender_confidence, e.age, e.age_low, e.age_high,
           e.age_confidence, e.direction, e.crops, e.models::jsonb, e.return_of
    FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::timestamptz[],
        $7::real[], $8::text[], $9::real[], $10::real[], $11::real[], $12::real[], $13::real[],
        $14::text[], $15::integer[], $16::text[], $17::uuid[]
    ) AS e(event_id, device_id, camera_id, track_id, first_seen, last_seen, dwell_s,
           gender, gender_confidence, age, age_low, age_high, age_confidence,
           direction, crops, models, return_of)
    ON CONFLICT (event_id, last_seen) DO NOTHING
    RETURNING event_id, device_id, last_seen
), seen AS (
    -- Devices count only events that were new, so redeliveries do not inflate them.
    INSERT INTO devices AS d (device_id, first_seen, last_seen, events)
    SELECT device_id, min(last_seen), max(last_seen), count(*) FROM new GROUP BY device_id
    ON CONFLICT (device_id) DO UPDATE SET
        first_seen = least(d.first_seen, excluded.first_seen),
        last_seen = greatest(d.last_seen, excluded.last_seen),
        last_received_at = now(),
        events = d.events + excluded.events
)
SELECT event_id FROM new
"""

_INSERT_REJECTS = """
INSERT INTO rejected_messages (topic, reason, detail, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])
"""

REJECT_PAYLOAD_KEEP = 2048


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that failed validation, kept as a dead letter."""

    topic: str
    reason: str
    detail: str
    payload: bytes


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; dead letters keep the exact bytes in ``payload``."""
    return value.replace("\x00", "\\x00")


@functools.lru_cache(maxsize=4096)
def _models_json_of(items: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(items))


def _models_json(models: dict[str, str]) -> str:
    """``models`` as JSON, remembered: a fleet runs a handful of model sets, and encoding
    the same small dict again for every event cost about 1.3 µs each."""
    return _models_json_of(tuple(models.items()))


def _columns(events: list[PersonEvent]) -> list[list[object]]:
    """The events as one array per column, in ``_INSERT_EVENTS`` parameter order."""
    return [
        [e.event_id for e in events],
        [e.device_id for e in events],
        [e.camera_id for e in events],
        [e.track_id for e in events],
        [e.first_seen for e in events],
        [e.last_seen for e in events],
        [e.dwell_s for e in events],
        [e.gender.value.value if e.gender else None for e in events],
        [e.gender.confidence if e.gender else None for e in events],
        [e.age.value if e.age else None for e in events],
        [e.age.low if e.age else None for e in events],
        [e.age.high if e.age else None for e in events],
        [e.age.confidence if e.age else None for e in events],
        [e.direction.value if e.direction else None for e in events],
        [e.crops for e in events],
        [_models_json(e.models) for e in events],
        [e.return_of for e in events],
    ]


async def store_batch(
    pool: asyncpg.Pool, events: list[PersonEvent], rejected: list[Rejected]
) -> set[uuid.UUID]:
    """Write events and dead letters in one transaction; return the ids that were new."""
    async with pool.acquire() as conn, conn.transaction():
        new: set[uuid.UUID] = set()
        if events:
            rows = await conn.fetch(_INSERT_EVENTS, *_columns(events))
            new = {row["event_id"] for row in rows}
        if rejected:
            await conn.execute(
                _INSERT_REJECTS,
                [_text(r.topic) for r in rejected],
                [r.reason for r in rejected],
                [_text(r.detail[:1000]) for r in rejected],
                [r.payload[:REJECT_PAYLOAD_KEEP] for r in rejected],
            )
        return new
