"""The HTTP API: statistics, events and exports, devices, cameras, occupancy, the daily
report, the live stream, health and metrics. OpenAPI at ``/openapi.json``, served as
interactive documentation at ``/docs``.

Every endpoint but ``/healthz`` needs an API key (``cloud_hub.api.auth``, docs/security.md):
``read`` for everything that reads, ``admin`` for changing cameras. The live stream also
takes a short-lived token, as browsers' EventSource cannot send headers.

What one request may make the hub do is bounded (docs/hub.md, "Limits"): bodies by
``HUB_MAX_BODY_BYTES`` and read only after the key is known (``auth.KeyBeforeBody``),
statistics by an estimate of their size made before the query
(``HUB_STATS_MAX_PAIRS``), and validation errors echo no large input.

One router per resource, each with its routes as module-level functions: ``stats``,
``reports`` (the daily report and occupancy), ``events`` (events and exports),
``devices``, ``cameras``, ``live``, ``dashboard`` and ``health`` (healthz and
metrics). They share typed dependencies (``deps``: the pool, the settings, the live
cache, the caller's key), query parameters and filters (``params``) and documented
responses (``responses``); :func:`create_app` only wires them together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from cloud_hub import __version__
from cloud_hub.api import cameras, dashboard, devices, errors, events, health, live, reports, stats
from cloud_hub.api.auth import KeyBeforeBody, RequireMetrics
from cloud_hub.api.http_policy import DefaultHeaders, HeadAsGet
from cloud_hub.api.responses import NOT_HTTP
from cloud_hub.live.tokens import LiveTokens
from cloud_hub.security.apikeys import parse_api_keys
from cloud_hub.service import Hub
from cloud_hub.settings import HubSettings

log = structlog.get_logger(__name__)

# In this order: OpenAPI lists the paths as the routes were added. The dashboard's
# routes (the page, no key needed to load it) are not in the schema.
_ROUTERS = (stats, reports, events, devices, cameras, live, dashboard, health)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs the whole hub (``app.state.hub``) while the app serves."""
    hub: Hub = app.state.hub
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()


def create_app(settings: HubSettings) -> FastAPI:
    """The app; its lifespan runs the whole hub, so ``uvicorn`` serves ingest and API."""
    hub = Hub(settings)
    hub.cache.stream_max = settings.live_stream_max
    app = FastAPI(
        title="Audience cloud hub",
        version=__version__,
        lifespan=lifespan,
        responses=NOT_HTTP,
        description="People counted by edge devices: statistics, events, devices, cameras, "
        "occupancy and a live stream. Send an API key as `X-API-Key` or `Authorization: "
        "Bearer` (docs/security.md); `read` reads, `admin` also changes cameras.",
        # Outermost first. The key is checked before the body limit, so a caller without
        # a key gets 401 whatever it sends, and nothing of its body is read.
        middleware=[
            Middleware(DefaultHeaders),
            Middleware(HeadAsGet),
            Middleware(KeyBeforeBody),
            # Starlette's limit (what FastAPI's max_body_size installs), inside
            # DefaultHeaders so that its 413 carries the same headers as every answer.
            Middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_body_bytes),
        ],
    )
    app.state.hub = hub
    app.state.api_keys = parse_api_keys(settings.api_keys)
    app.state.live_tokens = LiveTokens(settings.live_token_secret, settings.live_token_ttl_s)
    if not app.state.api_keys:
        log.warning(
            "no_api_keys",
            hint="every endpoint but /healthz answers 401; create a key with "
            "`cloud-hub apikey create --scope read` and set HUB_API_KEYS",
        )

    app.add_exception_handler(RequestValidationError, errors.invalid)
    for error in errors.STORAGE_ERRORS:
        app.add_exception_handler(error, errors.unavailable)

    for resource in _ROUTERS:
        app.include_router(resource.router)
    # /metrics needs a metrics key unless HUB_METRICS_PUBLIC (then network policy guards it).
    metrics_key = [] if settings.metrics_public else [RequireMetrics]
    app.include_router(health.metrics_router, dependencies=metrics_key)
    return app
