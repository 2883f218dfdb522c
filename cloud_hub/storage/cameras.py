"""Camera registry writes (the API's admin endpoints); reads: ``cloud_hub.queries.cameras``.

Each says only whether it wrote; the API reads the camera back through the read path.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from cloud_hub.schemas import CameraCreate, CameraUpdate


def _line(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


async def create_camera(pool: asyncpg.Pool, camera: CameraCreate) -> bool:
    """Register a camera; False when it is registered already."""
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
    return bool(created)


async def update_camera(
    pool: asyncpg.Pool, device_id: str, camera_id: str, update: CameraUpdate
) -> bool:
    """Change the fields ``update`` sets (null clears); False when not registered."""
    changes = update.model_dump(mode="json", exclude_unset=True)
    args: list[object] = [device_id, camera_id]
    sets = []
    for name in ("name", "site", "location", "counting_line"):
        if name in changes:
            value = _line(changes[name]) if name == "counting_line" else changes[name]
            cast = "::jsonb" if name == "counting_line" else ""
            args.append(value)
            sets.append(f"{name} = ${len(args)}{cast}")
    sets.append("updated_at = now()")
    found = await pool.fetchval(
        f"""UPDATE cameras SET {", ".join(sets)} WHERE device_id = $1 AND camera_id = $2
            RETURNING true""",
        *args,
    )
    return bool(found)


async def delete_camera(pool: asyncpg.Pool, device_id: str, camera_id: str) -> bool:
    """Unregister a camera (its events stay); whether it was registered."""
    deleted = await pool.fetchval(
        "DELETE FROM cameras WHERE device_id = $1 AND camera_id = $2 RETURNING true",
        device_id,
        camera_id,
    )
    return bool(deleted)
