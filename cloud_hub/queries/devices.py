"""Devices: their events, status and health."""

from __future__ import annotations

import json

import asyncpg

from cloud_hub.queries.filters import Filters
from cloud_hub.schemas import Device

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
    filters.add_if_given("device_id = {}", device_id)
    if state == "unknown":
        filters.clauses.append("s.state IS NULL")
    elif state is not None:
        filters.add("s.state = {}", state)
    rows = await pool.fetch(f"{_DEVICES} {filters.where()} ORDER BY device_id", *filters.args)
    return [_device(row) for row in rows]
