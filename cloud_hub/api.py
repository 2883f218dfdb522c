"""The HTTP API: statistics, events, devices, live recent results, health and metrics.

Every endpoint but ``/healthz`` needs an API key (``cloud_hub.auth``, docs/security.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_hub import __version__, queries
from cloud_hub.apikeys import parse_api_keys
from cloud_hub.auth import RequireMetrics, RequireRead
from cloud_hub.runtime import Hub
from cloud_hub.schemas import (
    Bucket,
    Device,
    EventsPage,
    Health,
    RecentEvents,
    StatsResponse,
)
from cloud_hub.settings import HubSettings
from edge_agent.contract import IdString

OptionalId = Annotated[IdString | None, Query()]

log = structlog.get_logger(__name__)


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _utc(value: datetime | None, default: datetime) -> datetime:
    if value is None:
        return default
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def create_app(settings: HubSettings) -> FastAPI:
    """The app; its lifespan runs the whole hub, so ``uvicorn`` serves ingest and API."""
    hub = Hub(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    app = FastAPI(title="Audience cloud hub", version=__version__, lifespan=lifespan)
    app.state.hub = hub
    app.state.api_keys = parse_api_keys(settings.api_keys)
    if not app.state.api_keys:
        log.warning(
            "no_api_keys",
            hint="every endpoint but /healthz answers 401; create a key with "
            "`cloud-hub apikey create --scope read` and set HUB_API_KEYS",
        )
    # Everything on this router needs a read key; admin endpoints add RequireAdmin.
    api = APIRouter(dependencies=[RequireRead])

    @api.get("/v1/stats", response_model=StatsResponse)
    async def get_stats(
        request: Request,
        start: datetime | None = None,
        end: datetime | None = None,
        bucket: Bucket = "hour",
        device_id: OptionalId = None,
        camera_id: OptionalId = None,
    ) -> StatsResponse:
        """People counted per hour or day by gender and age band (default: last 24 hours)."""
        now = datetime.now(UTC)
        end_ = _utc(end, now)
        start_ = _utc(start, end_ - timedelta(hours=24))
        if start_ >= end_:
            raise HTTPException(422, "start must be before end")
        try:
            totals, buckets = await queries.stats(
                _hub(request).pool, start_, end_, bucket, device_id, camera_id
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return StatsResponse(
            start=start_,
            end=end_,
            bucket=bucket,
            device_id=device_id,
            camera_id=camera_id,
            totals=totals,
            buckets=buckets,
        )

    @api.get("/v1/events", response_model=EventsPage)
    async def get_events(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        device_id: OptionalId = None,
        camera_id: OptionalId = None,
    ) -> EventsPage:
        """Stored events oldest first; follow ``next_cursor`` to read them all exactly once."""
        try:
            return await queries.events_page(
                _hub(request).pool,
                limit,
                cursor,
                None if start is None else _utc(start, start),
                None if end is None else _utc(end, end),
                device_id,
                camera_id,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    @api.get("/v1/devices", response_model=list[Device])
    async def get_devices(request: Request) -> list[Device]:
        """Every device that has sent events, with when it was last seen."""
        return await queries.devices(_hub(request).pool)

    @api.get("/v1/cameras/{device_id}/{camera_id}/recent", response_model=RecentEvents)
    async def get_recent(
        request: Request,
        device_id: IdString,
        camera_id: IdString,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RecentEvents:
        """The camera's latest events from Redis (within the cache TTL), newest first."""
        events = await _hub(request).cache.recent(device_id, camera_id, limit)
        if events is None:
            raise HTTPException(503, "live cache disabled: Redis was not reachable at startup")
        return RecentEvents(device_id=device_id, camera_id=camera_id, events=events)

    app.include_router(api)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz(request: Request) -> JSONResponse:
        """200 while ingest works (database and broker up), 503 otherwise."""
        h = _hub(request)
        db = await h.db_ok() and h.ingest.db_ok
        mqtt = h.ingest.connected and h.consuming
        redis = ("ok" if await h.cache.ping() else "down") if h.cache.enabled else "disabled"
        health = Health(
            status="ok" if db and mqtt else "degraded",
            db="ok" if db else "down",
            mqtt="ok" if mqtt else "down",
            redis=redis,
        )
        return JSONResponse(health.model_dump(), status_code=200 if db and mqtt else 503)

    @app.get("/metrics", dependencies=[] if settings.metrics_public else [RequireMetrics])
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
