"""``/v1/cameras``: the camera registry (reading needs a ``read`` key, changing it
``admin``), and a camera's recent events from the live cache."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from cloud_hub.api.auth import RequireAdmin, RequireRead
from cloud_hub.api.deps import Cache, Pool
from cloud_hub.api.params import Limit, OptionalId, Site
from cloud_hub.api.responses import BAD_BODY, CACHE_OFF, NOT_FOUND, READ
from cloud_hub.queries.cameras import cameras
from cloud_hub.schemas import Camera, CameraCreate, CameraUpdate, RecentEvents
from cloud_hub.storage import cameras as registry
from edge_agent.contract import IdString

router = APIRouter(dependencies=[RequireRead], responses=READ)


@router.get("/v1/cameras", response_model=list[Camera], tags=["cameras"])
async def get_cameras(pool: Pool, site: Site = None, device_id: OptionalId = None) -> list[Camera]:
    """Registered cameras: name, site, location, counting line, and their state as the
    device last reported it."""
    return await cameras(pool, site=site, device_id=device_id)


@router.post(
    "/v1/cameras",
    response_model=Camera,
    status_code=201,
    dependencies=[RequireAdmin],
    responses={409: {"description": "Registered already."}, **BAD_BODY},
    tags=["cameras"],
)
async def post_camera(pool: Pool, camera: CameraCreate) -> Camera:
    """Register a camera (admin)."""
    if not await registry.create_camera(pool, camera):
        raise HTTPException(409, "camera registered already; PATCH it")
    return await _registered(pool, camera.device_id, camera.camera_id)


@router.get(
    "/v1/cameras/{device_id}/{camera_id}",
    response_model=Camera,
    responses=NOT_FOUND,
    tags=["cameras"],
)
async def get_camera(pool: Pool, device_id: IdString, camera_id: IdString) -> Camera:
    """One registered camera."""
    found = await cameras(pool, device_id=device_id, camera_id=camera_id)
    if not found:
        raise HTTPException(404, "camera not registered")
    return found[0]


@router.patch(
    "/v1/cameras/{device_id}/{camera_id}",
    response_model=Camera,
    dependencies=[RequireAdmin],
    responses={**NOT_FOUND, **BAD_BODY},
    tags=["cameras"],
)
async def patch_camera(
    pool: Pool, device_id: IdString, camera_id: IdString, update: CameraUpdate
) -> Camera:
    """Change a camera's fields (admin): those sent; null clears one."""
    if not await registry.update_camera(pool, device_id, camera_id, update):
        raise HTTPException(404, "camera not registered")
    return await _registered(pool, device_id, camera_id)


@router.delete(
    "/v1/cameras/{device_id}/{camera_id}",
    status_code=204,
    dependencies=[RequireAdmin],
    responses=NOT_FOUND,
    tags=["cameras"],
)
async def delete_camera(pool: Pool, device_id: IdString, camera_id: IdString) -> Response:
    """Unregister a camera (admin). Its events stay; it no longer counts for a site."""
    if not await registry.delete_camera(pool, device_id, camera_id):
        raise HTTPException(404, "camera not registered")
    return Response(status_code=204)


@router.get(
    "/v1/cameras/{device_id}/{camera_id}/recent",
    response_model=RecentEvents,
    tags=["live"],
)
async def get_recent(
    cache: Cache, device_id: IdString, camera_id: IdString, limit: Limit = 100
) -> RecentEvents:
    """The camera's latest events from Redis (within the cache TTL), newest first."""
    events = await cache.recent(device_id, camera_id, limit)
    if events is None:
        raise HTTPException(503, CACHE_OFF)
    return RecentEvents(device_id=device_id, camera_id=camera_id, events=events)


async def _registered(pool: Pool, device_id: str, camera_id: str) -> Camera:
    """The camera as the read path shows it, right after a write."""
    return (await cameras(pool, device_id=device_id, camera_id=camera_id))[0]
