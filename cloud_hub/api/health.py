"""Operations: ``/healthz`` (always open) and ``/metrics`` (Prometheus; a ``metrics`` key
unless ``HUB_METRICS_PUBLIC``, which ``create_app`` applies as it includes
:data:`metrics_router`)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_hub.api.deps import HubDep
from cloud_hub.api.responses import AUTH
from cloud_hub.schemas import Health

router = APIRouter()
metrics_router = APIRouter()


@router.get(
    "/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["operations"]
)
async def healthz(hub: HubDep) -> JSONResponse:
    """200 while ingest works (database and broker up), 503 otherwise."""
    db = await hub.db_ok() and hub.ingest.db_ok
    mqtt = hub.ingest.connected and hub.consuming
    redis = ("ok" if await hub.cache.ping() else "down") if hub.cache.enabled else "disabled"
    health = Health(
        status="ok" if db and mqtt else "degraded",
        db="ok" if db else "down",
        mqtt="ok" if mqtt else "down",
        redis=redis,
        rollups=hub.rollups.state,
        rollup_rounds=hub.rollups.rounds,
    )
    return JSONResponse(health.model_dump(), status_code=200 if db and mqtt else 503)


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **AUTH},
    tags=["operations"],
)
async def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
