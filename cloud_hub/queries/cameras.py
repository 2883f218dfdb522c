"""Registered cameras, with their state as their device last reported it."""

from __future__ import annotations

import json

import asyncpg

from cloud_hub.queries.filters import Filters
from cloud_hub.schemas import Camera

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
    filters.add_if_given("c.site = {}", site)
    filters.add_if_given("c.device_id = {}", device_id)
    filters.add_if_given("c.camera_id = {}", camera_id)
    rows = await pool.fetch(
        f"{_CAMERAS} {filters.where()} ORDER BY c.device_id, c.camera_id", *filters.args
    )
    return [_camera(row) for row in rows]
