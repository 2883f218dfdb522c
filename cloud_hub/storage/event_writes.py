"""The batch write path: one transaction stores a batch of events and its rejects.

Idempotent on ``event_id`` alone: the statement first claims each id in ``event_ids``
(primary key on the id) and writes a ``person_events`` row only for the ids it claimed,
so a redelivered event, or the same id again with another ``last_seen``, device or
partition, is a no-op. ``person_events`` itself cannot have that key: hypertables and
partitioned tables need their time column in every unique key, and a lookup of the id in
every chunk (compressed ones included) would cost more than one small index. The claim
is a unique-index insert, so concurrent hubs cannot both win it. The same statement runs
on TimescaleDB and on plain PostgreSQL; neither needs more than this one statement per
batch (rollups are kept by TimescaleDB, or by the hub from a statement trigger's log).
"""

from __future__ import annotations

import functools
import json
import uuid

import asyncpg

from cloud_hub.received import Rejected
from edge_agent.contract import PersonEvent, event_watcher

# Parts of the statement that bench/idempotency.py reuses for the one it replaced, so the
# two differ by the claim alone. The arrays come in ``_columns`` order; ``INSERT_EVENT_ROWS``
# selects from rows named ``e``.
EVENT_ARRAYS = """unnest(
        $1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::timestamptz[],
        $7::real[], $8::text[], $9::real[], $10::real[], $11::real[], $12::real[], $13::real[],
        $14::text[], $15::integer[], $16::text[], $17::uuid[], $18::boolean[], $19::real[],
        $20::real[], $21::text[]
    )"""
EVENT_FIELDS = """event_id, device_id, camera_id, track_id, first_seen, last_seen,
           dwell_s, gender, gender_confidence, age, age_low, age_high, age_confidence,
           direction, crops, models, return_of, watcher, attention_s, p_female, age_bands"""
INSERT_EVENT_ROWS = f"""INSERT INTO person_events ({EVENT_FIELDS})
    SELECT e.event_id, e.device_id, e.camera_id, e.track_id, e.first_seen, e.last_seen,
           e.dwell_s, e.gender, e.gender_confidence, e.age, e.age_low, e.age_high,
           e.age_confidence, e.direction, e.crops, e.models::jsonb, e.return_of, e.watcher,
           e.attention_s, e.p_female, e.age_bands::real[]"""
COUNT_NEW_PER_DEVICE = """seen AS (
    -- Devices count only events that were new, so redeliveries do not inflate them.
    INSERT INTO devices AS d (device_id, first_seen, last_seen, events)
    SELECT device_id, min(last_seen), max(last_seen), count(*) FROM new GROUP BY device_id
    ON CONFLICT (device_id) DO UPDATE SET
        first_seen = least(d.first_seen, excluded.first_seen),
        last_seen = greatest(d.last_seen, excluded.last_seen),
        last_received_at = now(),
        events = d.events + excluded.events
)
SELECT event_id FROM new"""

_INSERT_EVENTS = f"""
WITH batch AS (
    -- One row per id: the first of the batch (a batch may carry an id twice).
    SELECT DISTINCT ON (e.event_id) e.*
    FROM {EVENT_ARRAYS} WITH ORDINALITY AS e({EVENT_FIELDS}, ord)
    ORDER BY e.event_id, e.ord
), claimed AS (
    INSERT INTO event_ids (event_id, last_seen)
    SELECT event_id, last_seen FROM batch
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), new AS (
    {INSERT_EVENT_ROWS}
    FROM batch e JOIN claimed USING (event_id)
    -- A safety net only: an id whose claim was pruned (older than retention) while its
    -- row still waits for its chunk to be dropped.
    ON CONFLICT (event_id, last_seen) DO NOTHING
    RETURNING event_id, device_id, last_seen
), {COUNT_NEW_PER_DEVICE}
"""

# A reject marked ``once`` is kept only if the same topic and payload are not kept
# already: a retained message (a device's status) comes again at every hub start.
_INSERT_REJECTS = """
INSERT INTO rejected_messages (topic, reason, detail, payload)
SELECT r.topic, r.reason, r.detail, r.payload
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::boolean[])
     AS r(topic, reason, detail, payload, once)
WHERE NOT (r.once AND EXISTS (SELECT 1 FROM rejected_messages k
                              WHERE k.topic = r.topic AND k.payload = r.payload))
"""

REJECT_PAYLOAD_KEEP = 2048


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
        # A schema 1 event (a 0.1 agent, faces only) is a watcher of unknown attention.
        [event_watcher(e) for e in events],
        [e.attention_s for e in events],
        [e.p_female for e in events],
        # A 2-D array cannot be unnested row by row: each event's bands travel as the
        # text of a real[] (``{0.1,0.2,...}``), cast back in the statement.
        [_real_array(e.age_bands) for e in events],
    ]


def _real_array(values: list[float] | None) -> str | None:
    """``values`` as a PostgreSQL array literal, or None."""
    return None if values is None else "{" + ",".join(repr(float(v)) for v in values) + "}"


async def store_batch(
    pool: asyncpg.Pool, events: list[PersonEvent], rejected: list[Rejected]
) -> list[uuid.UUID]:
    """Write events and dead letters in one transaction; return the ids of the rows
    written (each once: an id the batch carries twice is written once, or not at all)."""
    async with pool.acquire() as conn, conn.transaction():
        new: list[uuid.UUID] = []
        if events:
            rows = await conn.fetch(_INSERT_EVENTS, *_columns(events))
            new = [row["event_id"] for row in rows]
        if rejected:
            await conn.execute(
                _INSERT_REJECTS,
                [_text(r.topic) for r in rejected],
                [r.reason for r in rejected],
                [_text(r.detail[:1000]) for r in rejected],
                [r.payload[:REJECT_PAYLOAD_KEEP] for r in rejected],
                [r.once for r in rejected],
            )
        return new
