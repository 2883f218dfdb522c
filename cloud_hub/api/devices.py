"""``/v1/devices``: every device that sent events, a status or health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from cloud_hub.api.auth import RequireRead
from cloud_hub.api.deps import Pool
from cloud_hub.api.responses import NOT_FOUND, READ
from cloud_hub.queries.devices import devices
from cloud_hub.schemas import Device
from edge_agent.contract import DeviceState, IdString

router = APIRouter(dependencies=[RequireRead], responses=READ)


@router.get("/v1/devices", response_model=list[Device], tags=["devices"])
async def get_devices(
    pool: Pool,
    state: Annotated[
        DeviceState | None,
        Query(description="Only devices whose status says online (or offline)."),
    ] = None,
) -> list[Device]:
    """Every device that sent events, a status or health: its events, online or
    offline (its retained status and last will), versions, cameras and health."""
    return await devices(pool, state.value if state else None)


@router.get("/v1/devices/{device_id}", response_model=Device, responses=NOT_FOUND, tags=["devices"])
async def get_device(pool: Pool, device_id: IdString) -> Device:
    """One device, as in the list."""
    found = await devices(pool, device_id=device_id)
    if not found:
        raise HTTPException(404, "no such device")
    return found[0]
