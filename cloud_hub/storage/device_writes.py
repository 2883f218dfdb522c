"""What devices publish besides events: status, health and occupancy.

The contract (``edge_agent.contract``) validates each message and
``cloud_hub.ingest.validation`` names the reason for a refusal (one classifier for events
and these); this module writes a batch of what they become (``cloud_hub.received``) in one
transaction:

- ``device_status``: the newest status per device. A last will (``at`` null) only turns
  the device offline and keeps what it last said it runs; a status is ordered by ``at``,
  or by when the hub received it when it has none, so a status that arrives late (from
  another hub's share of the work, say) cannot undo a newer one. An empty payload (a
  cleared retained status: the device was decommissioned) deletes the row.
- ``device_health``: the newest sample per device.
- ``occupancy_minutely``: samples summed per camera and UTC minute of their ``at``.

Status arrives with QoS 1 and is acknowledged after the commit like events; health and
occupancy are QoS 0 telemetry, so a lost sample is replaced by the next one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from cloud_hub.received import HealthSample, StatusUpdate, TelemetryBatch
from edge_agent.contract import Occupancy

_UPSERT_STATUS = """
INSERT INTO device_status AS s (device_id, state, at, effective_at, received_at, agent_version,
    models, cameras, config_version, config_error, outbox_dropped)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11)
ON CONFLICT (device_id) DO UPDATE SET
    state = excluded.state,
    at = excluded.at,
    effective_at = excluded.effective_at,
    received_at = excluded.received_at,
    -- A last will says only "offline": keep what the device last said it runs.
    agent_version = CASE WHEN excluded.at IS NULL THEN s.agent_version
                         ELSE excluded.agent_version END,
    models = CASE WHEN excluded.at IS NULL THEN s.models ELSE excluded.models END,
    cameras = CASE WHEN excluded.at IS NULL THEN s.cameras ELSE excluded.cameras END,
    config_version = CASE WHEN excluded.at IS NULL THEN s.config_version
                          ELSE excluded.config_version END,
    config_error = CASE WHEN excluded.at IS NULL THEN s.config_error
                        ELSE excluded.config_error END,
    outbox_dropped = CASE WHEN excluded.at IS NULL THEN s.outbox_dropped
                          ELSE excluded.outbox_dropped END
WHERE s.effective_at <= excluded.effective_at
"""

_DELETE_STATUS = """
DELETE FROM device_status WHERE device_id = $1 AND effective_at <= $2
"""

_UPSERT_HEALTH = """
INSERT INTO device_health AS h (device_id, at, received_at, cpu_percent, memory_mb,
    temperature_c, outbox_depth, outbox_dropped, cameras, latency_ms)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[],
    $4::double precision[], $5::double precision[], $6::double precision[], $7::bigint[],
    $8::bigint[], $9::jsonb[], $10::jsonb[])
ON CONFLICT (device_id) DO UPDATE SET
    at = excluded.at, received_at = excluded.received_at, cpu_percent = excluded.cpu_percent,
    memory_mb = excluded.memory_mb, temperature_c = excluded.temperature_c,
    outbox_depth = excluded.outbox_depth, outbox_dropped = excluded.outbox_dropped,
    cameras = excluded.cameras, latency_ms = excluded.latency_ms
WHERE h.at <= excluded.at
"""

_UPSERT_OCCUPANCY = """
INSERT INTO occupancy_minutely AS o (bucket, device_id, camera_id, samples, people_sum,
    people_max, people_min, last_at, last_people)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::integer[], $5::bigint[],
    $6::integer[], $7::integer[], $8::timestamptz[], $9::integer[])
ON CONFLICT (device_id, camera_id, bucket) DO UPDATE SET
    samples = o.samples + excluded.samples,
    people_sum = o.people_sum + excluded.people_sum,
    people_max = greatest(o.people_max, excluded.people_max),
    people_min = least(o.people_min, excluded.people_min),
    last_people = CASE WHEN excluded.last_at >= o.last_at THEN excluded.last_people
                       ELSE o.last_people END,
    last_at = greatest(o.last_at, excluded.last_at)
"""


def minute(moment: datetime) -> datetime:
    """The start of the UTC minute ``moment`` falls in."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass(slots=True)
class _Minute:
    samples: int
    people_sum: int
    people_max: int
    people_min: int
    last_at: datetime
    last_people: int


def fold_occupancy(samples: list[Occupancy]) -> dict[tuple[str, str, datetime], _Minute]:
    """Samples summed per (device, camera, minute): one upsert row each, as PostgreSQL
    cannot update one row twice in a statement."""
    folded: dict[tuple[str, str, datetime], _Minute] = {}
    for s in samples:
        key = (s.device_id, s.camera_id, minute(s.at))
        row = folded.get(key)
        if row is None:
            folded[key] = _Minute(1, s.people, s.people, s.people, s.at, s.people)
            continue
        row.samples += 1
        row.people_sum += s.people
        row.people_max = max(row.people_max, s.people)
        row.people_min = min(row.people_min, s.people)
        if s.at >= row.last_at:
            row.last_at, row.last_people = s.at, s.people
    return folded


def _status_args(update: StatusUpdate) -> tuple[object, ...]:
    s = update.status
    assert s is not None
    return (
        update.device_id,
        s.state.value,
        s.at,
        update.effective_at,
        update.received_at,
        s.agent_version,
        json.dumps(s.models),
        json.dumps([c.model_dump(mode="json") for c in s.cameras]),
        s.config_version,
        s.config_error,
        s.outbox_dropped,
    )


async def store_telemetry(pool: asyncpg.Pool, batch: TelemetryBatch) -> None:
    """Write a batch's statuses, health samples and occupancy in one transaction."""
    if not batch:
        return
    async with pool.acquire() as conn, conn.transaction():
        for update in batch.statuses:  # in arrival order: a will after a status wins
            if update.status is None:
                await conn.execute(_DELETE_STATUS, update.device_id, update.effective_at)
            else:
                await conn.execute(_UPSERT_STATUS, *_status_args(update))
        if batch.health:
            newest: dict[str, HealthSample] = {}
            for sample in batch.health:
                known = newest.get(sample.health.device_id)
                if known is None or sample.health.at >= known.health.at:
                    newest[sample.health.device_id] = sample
            rows = [(s.health, s.received_at) for s in newest.values()]
            await conn.execute(
                _UPSERT_HEALTH,
                [h.device_id for h, _ in rows],
                [h.at for h, _ in rows],
                [r for _, r in rows],
                [h.cpu_percent for h, _ in rows],
                [h.memory_mb for h, _ in rows],
                [h.temperature_c for h, _ in rows],
                [h.outbox_depth for h, _ in rows],
                [h.outbox_dropped for h, _ in rows],
                [json.dumps([c.model_dump(mode="json") for c in h.cameras]) for h, _ in rows],
                [
                    json.dumps({k: v.model_dump(mode="json") for k, v in h.latency_ms.items()})
                    for h, _ in rows
                ],
            )
        if batch.occupancy:
            folded = fold_occupancy(batch.occupancy)
            keys = list(folded)
            await conn.execute(
                _UPSERT_OCCUPANCY,
                [k[2] for k in keys],
                [k[0] for k in keys],
                [k[1] for k in keys],
                [folded[k].samples for k in keys],
                [folded[k].people_sum for k in keys],
                [folded[k].people_max for k in keys],
                [folded[k].people_min for k in keys],
                [folded[k].last_at for k in keys],
                [folded[k].last_people for k in keys],
            )
