"""Camera registry writes (the API's admin endpoints); reads: ``cloud_hub.queries.cameras``."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from cloud_hub.api.schemas import Camera, CameraCreate, CameraUpdate
from cloud_hub.queries.cameras import cameras
from cloud_hub.queries.filters import Filters


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
