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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
)
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.middleware import Middleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from cloud_hub import __version__, queries
from cloud_hub.api import dashboard
from cloud_hub.api.auth import (
    LIVE_COOKIE,
    KeyBeforeBody,
    RequireAdmin,
    RequireLive,
    RequireMetrics,
    RequireRead,
    require_scope,
)
from cloud_hub.api.export import MEDIA_TYPES, stream_events
from cloud_hub.api.http_policy import DefaultHeaders, HeadAsGet
from cloud_hub.api.schemas import (
    AgeBand,
    Bucket,
    Camera,
    CameraCreate,
    CameraUpdate,
    CurrentOccupancyResponse,
    DailyReport,
    Device,
    DirectionValue,
    EventsPage,
    ExportFormat,
    GenderValue,
    GroupBy,
    Health,
    LiveToken,
    OccupancyGroupBy,
    OccupancyResponse,
    RecentEvents,
    StatsResponse,
)
from cloud_hub.live.cache import LIVE_KINDS, LiveKind, Subscription, stream_id_key
from cloud_hub.live.tokens import LiveTokens
from cloud_hub.security.apikeys import ApiKey, parse_api_keys
from cloud_hub.service import Hub
from cloud_hub.settings import HubSettings
from edge_agent.contract import DeviceState, IdString

OptionalId = Annotated[IdString | None, Query()]
Site = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Only cameras registered at this site (see /v1/cameras).",
    ),
]
Start = Annotated[
    datetime | None,
    Query(description="Inclusive, ISO 8601; without a zone UTC. Default: end minus 24 hours."),
]
End = Annotated[datetime | None, Query(description="Exclusive, ISO 8601. Default: now.")]
GenderQ = Annotated[GenderValue | None, Query(description="Only this gender.")]
AgeBandQ = Annotated[AgeBand | None, Query(description="Only this age band.")]
DirectionQ = Annotated[
    DirectionValue | None, Query(description="Only this direction (none: no line crossed).")
]

log = structlog.get_logger(__name__)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Not registered / not known."}}
_BAD_QUERY: dict[int | str, dict[str, Any]] = {
    422: {"description": "A parameter is invalid, or the answer would be too big."}
}
_TOO_BIG: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "A parameter is invalid, or the answer would be too big: its "
        "bucket x group pairs, estimated before the query, exceed HUB_STATS_MAX_PAIRS "
        "(the message gives the estimate, the limit and how to narrow the request)."
    }
}
_DB_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"description": "The database (or, for live data, Redis) is unreachable."}
}
_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or one the hub does not know."},
    403: {"description": "The key's scope is too small."},
}
_BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not JSON."},
    413: {"description": "The body is larger than HUB_MAX_BODY_BYTES."},
}
_ECHO_MAX = 100  # characters of an invalid input a 422 repeats
_HEARTBEAT_S = 15.0


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


async def _json(answer: BaseModel) -> Response:
    """A possibly large answer (tens of MB at HUB_STATS_MAX_PAIRS) encoded in a worker
    thread; FastAPI would encode it on the event loop, which ingest shares. The route's
    ``response_model`` still documents it; the model was validated when it was built."""
    body = await asyncio.to_thread(answer.model_dump_json)
    return Response(body, media_type="application/json")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _checked(start: datetime, end: datetime) -> None:
    """The one check of a time range every endpoint makes (``queries.check_range``:
    start before end, both in the years served); 422 otherwise."""
    try:
        queries.check_range(start, end)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


def _range(
    start: datetime | None, end: datetime | None, default: timedelta = timedelta(hours=24)
) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC from the query, defaults filled; 422 when unusable."""
    try:
        end_ = _utc(end) if end is not None else datetime.now(UTC)
        if not queries.EARLIEST < end_ <= queries.LATEST:
            raise ValueError
        start_ = _utc(start) if start is not None else end_ - default
    except (ValueError, OverflowError) as exc:
        detail = f"times must lie between {queries.EARLIEST:%Y-%m-%d} and {queries.LATEST:%Y-%m-%d}"
        raise HTTPException(422, detail) from exc
    _checked(start_, end_)
    return start_, end_


def _bound(value: datetime | None) -> datetime | None:
    """A filter time in UTC, clamped to the years the API serves."""
    if value is None:
        return None
    try:
        value = _utc(value)
    except OverflowError:  # a zone offset past datetime's first or last day
        return queries.EARLIEST if value.year < 5000 else queries.LATEST
    return min(max(value, queries.EARLIEST), queries.LATEST)


def event_filter(
    start: Annotated[datetime | None, Query(description="Inclusive (last_seen).")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive (last_seen).")] = None,
    device_id: OptionalId = None,
    camera_id: OptionalId = None,
    site: Site = None,
    gender: GenderQ = None,
    age_band: AgeBandQ = None,
    direction: DirectionQ = None,
    returning: Annotated[
        bool | None, Query(description="true: only returns; false: only first visits.")
    ] = None,
) -> queries.EventFilter:
    """The filters /v1/events and /v1/export/events share. Either end may be left open;
    with both, the range is checked as every endpoint checks it (start before end)."""
    start_, end_ = _bound(start), _bound(end)
    if start_ is not None and end_ is not None:
        _checked(start_, end_)
    return queries.EventFilter(
        start_,
        end_,
        device_id,
        camera_id,
        site,
        gender,
        age_band,
        direction,
        returning,
    )


EventQ = Annotated[queries.EventFilter, Depends(event_filter)]


def create_app(settings: HubSettings) -> FastAPI:
    """The app; its lifespan runs the whole hub, so ``uvicorn`` serves ingest and API."""
    hub = Hub(settings)
    hub.cache.stream_max = settings.live_stream_max

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    app = FastAPI(
        title="Audience cloud hub",
        version=__version__,
        lifespan=lifespan,
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

    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("storage_unavailable", error=str(exc), kind=type(exc).__name__)
        return JSONResponse({"detail": "storage unavailable, try again"}, status_code=503)

    async def invalid(_request: Request, exc: Exception) -> JSONResponse:
        """FastAPI's 422, without repeating large inputs: a 5 MB field would otherwise
        come back whole (``input``), and a missing field's ``input`` is the whole body."""
        assert isinstance(exc, RequestValidationError)
        errors = []
        for error in exc.errors():
            error = dict(error)
            value = error.get("input")
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str) and len(value) > _ECHO_MAX:
                error["input"] = f"{value[:_ECHO_MAX]}... ({len(value):,} characters)"
            elif isinstance(value, dict | list | tuple | set):
                del error["input"]  # the caller has it; loc says where
            errors.append(error)
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)

    for error in (
        OSError,
        TimeoutError,
        asyncpg.InterfaceError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        RedisError,
    ):
        app.add_exception_handler(error, unavailable)

    # Everything on this router needs a read key; admin endpoints add RequireAdmin.
    api = APIRouter(dependencies=[RequireRead], responses={**_AUTH, **_DB_DOWN})

    # --- statistics ------------------------------------------------------------------------

    @api.get("/v1/stats", response_model=StatsResponse, responses=_TOO_BIG, tags=["stats"])
    async def get_stats(
        request: Request,
        start: Start = None,
        end: End = None,
        bucket: Annotated[
            Bucket, Query(description="UTC buckets; weeks start on Monday.")
        ] = "hour",
        device_id: OptionalId = None,
        camera_id: OptionalId = None,
        site: Site = None,
        gender: GenderQ = None,
        age_band: AgeBandQ = None,
        direction: DirectionQ = None,
        group_by: Annotated[
            list[GroupBy] | None,
            Query(
                description="Repeat for several: each bucket and the totals get `groups`, "
                "one per combination (camera: device_id and camera_id)."
            ),
        ] = None,
    ) -> Response:
        """People counted per bucket (minute to month) and in total: by gender, age band and
        direction, first visits against returns, average age and dwell. Range ``[start,
        end)`` by each event's ``last_seen``, default the last 24 hours; empty buckets are
        included with zeros."""
        start_, end_ = _range(start, end)
        groups = list(dict.fromkeys(group_by or []))
        try:
            totals, buckets = await queries.stats(
                _hub(request).pool,
                start_,
                end_,
                bucket,
                device_id,
                camera_id,
                site,
                gender=gender,
                age_band=age_band,
                direction=direction,
                group_by=groups,
                max_pairs=settings.stats_max_pairs,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        answer = StatsResponse(
            start=start_,
            end=end_,
            bucket=bucket,
            device_id=device_id,
            camera_id=camera_id,
            site=site,
            gender=gender,
            age_band=age_band,
            direction=direction,
            group_by=groups,
            totals=totals,
            buckets=buckets,
        )
        return await _json(answer)

    @api.get("/v1/reports/daily", response_model=DailyReport, responses=_TOO_BIG, tags=["stats"])
    async def get_daily_report(
        request: Request,
        day: Annotated[
            date | None, Query(alias="date", description="A UTC day; default today.")
        ] = None,
        device_id: OptionalId = None,
        camera_id: OptionalId = None,
        site: Site = None,
    ) -> Response:
        """One UTC day per camera: people, male and female, age bands, first visits and
        returns, average age and dwell, and the same for each hour."""
        day = day or datetime.now(UTC).date()
        try:
            start_, end_ = queries.day_range(day)
            cameras = await queries.daily_stats(
                _hub(request).pool,
                day,
                device_id,
                camera_id,
                site,
                max_pairs=settings.stats_max_pairs,
            )
        except (ValueError, OverflowError) as exc:
            raise HTTPException(422, str(exc) or "date out of range") from exc
        return await _json(
            DailyReport(date=day.isoformat(), start=start_, end=end_, cameras=cameras)
        )

    @api.get(
        "/v1/occupancy", response_model=OccupancyResponse, responses=_TOO_BIG, tags=["occupancy"]
    )
    async def get_occupancy(
        request: Request,
        start: Start = None,
        end: End = None,
        bucket: Bucket = "hour",
        device_id: OptionalId = None,
        camera_id: OptionalId = None,
        site: Site = None,
        group_by: Annotated[list[OccupancyGroupBy] | None, Query()] = None,
    ) -> OccupancyResponse:
        """People in view over time, from the devices' occupancy messages (a minute's
        resolution): per bucket the average and the peak; per site, device or camera with
        ``group_by``. Buckets without samples are left out."""
        start_, end_ = _range(start, end)
        groups = list(dict.fromkeys(group_by or []))
        try:
            buckets = await queries.occupancy(
                _hub(request).pool,
                start_,
                end_,
                bucket,
                device_id,
                camera_id,
                site,
                groups,
                max_pairs=settings.stats_max_pairs,
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return OccupancyResponse(
            start=start_,
            end=end_,
            bucket=bucket,
            device_id=device_id,
            camera_id=camera_id,
            site=site,
            group_by=groups,
            buckets=buckets,
        )

    @api.get("/v1/occupancy/current", response_model=CurrentOccupancyResponse, tags=["occupancy"])
    async def get_current_occupancy(
        request: Request,
        device_id: OptionalId = None,
        camera_id: OptionalId = None,
        site: Site = None,
    ) -> CurrentOccupancyResponse:
        """Each camera's latest occupancy sample (from Redis; from the database when the
        live cache is off) and their sum. Check ``at``: a camera that stopped reporting
        keeps its last sample."""
        h = _hub(request)
        samples = await h.cache.occupancy()
        source = "redis"
        if samples is None:
            samples, source = await queries.current_occupancy_db(h.pool), "database"
        cameras = await queries.with_camera_names(h.pool, samples, device_id, camera_id, site)
        return CurrentOccupancyResponse(
            source=source, total=sum(c.people for c in cameras), cameras=cameras
        )

    # --- events ---------------------------------------------------------------------------

    @api.get("/v1/events", response_model=EventsPage, responses=_BAD_QUERY, tags=["events"])
    async def get_events(
        request: Request,
        where: EventQ,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> EventsPage:
        """Stored events oldest first by ``(last_seen, event_id)``; follow ``next_cursor``
        until it is null to read each event exactly once, even while new ones arrive."""
        try:
            return await queries.events_page(_hub(request).pool, limit, cursor, where=where)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    @api.get(
        "/v1/export/events",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "The events, oldest first, streamed.",
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "array", "items": {}}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            },
            **_BAD_QUERY,
        },
        tags=["events"],
    )
    async def export_events(
        request: Request,
        where: EventQ,
        format: Annotated[
            ExportFormat, Query(description="csv (with a header row), json (an array), ndjson.")
        ] = "csv",
    ) -> StreamingResponse:
        """Every matching event, oldest first, as a file streamed batch by batch: any
        range at flat memory. Default range: the last 24 hours. A response cut short by a
        failure ends without its final chunk, so clients see it as incomplete."""
        start_, end_ = _range(where.start, where.end)
        where = queries.EventFilter(
            start_,
            end_,
            where.device_id,
            where.camera_id,
            where.site,
            where.gender,
            where.age_band,
            where.direction,
            where.returning,
        )
        name = f"events-{start_:%Y%m%dT%H%M%SZ}-{end_:%Y%m%dT%H%M%SZ}.{format}"
        return StreamingResponse(
            stream_events(_hub(request).pool, where, format, settings.export_batch_rows),
            media_type=MEDIA_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # --- devices ------------------------------------------------------------------------------

    @api.get("/v1/devices", response_model=list[Device], tags=["devices"])
    async def get_devices(
        request: Request,
        state: Annotated[
            DeviceState | None,
            Query(description="Only devices whose status says online (or offline)."),
        ] = None,
    ) -> list[Device]:
        """Every device that sent events, a status or health: its events, online or
        offline (its retained status and last will), versions, cameras and health."""
        return await queries.devices(_hub(request).pool, state.value if state else None)

    @api.get(
        "/v1/devices/{device_id}", response_model=Device, responses=_NOT_FOUND, tags=["devices"]
    )
    async def get_device(request: Request, device_id: IdString) -> Device:
        """One device, as in the list."""
        found = await queries.devices(_hub(request).pool, device_id=device_id)
        if not found:
            raise HTTPException(404, "no such device")
        return found[0]

    # --- cameras ------------------------------------------------------------------------------

    @api.get("/v1/cameras", response_model=list[Camera], tags=["cameras"])
    async def get_cameras(
        request: Request, site: Site = None, device_id: OptionalId = None
    ) -> list[Camera]:
        """Registered cameras: name, site, location, counting line, and their state as the
        device last reported it."""
        return await queries.cameras(_hub(request).pool, site=site, device_id=device_id)

    @api.post(
        "/v1/cameras",
        response_model=Camera,
        status_code=201,
        dependencies=[RequireAdmin],
        responses={409: {"description": "Registered already."}, **_BAD_BODY},
        tags=["cameras"],
    )
    async def post_camera(request: Request, camera: CameraCreate) -> Camera:
        """Register a camera (admin)."""
        created = await queries.create_camera(_hub(request).pool, camera)
        if created is None:
            raise HTTPException(409, "camera registered already; PATCH it")
        return created

    @api.get(
        "/v1/cameras/{device_id}/{camera_id}",
        response_model=Camera,
        responses=_NOT_FOUND,
        tags=["cameras"],
    )
    async def get_camera(request: Request, device_id: IdString, camera_id: IdString) -> Camera:
        """One registered camera."""
        found = await queries.cameras(_hub(request).pool, device_id=device_id, camera_id=camera_id)
        if not found:
            raise HTTPException(404, "camera not registered")
        return found[0]

    @api.patch(
        "/v1/cameras/{device_id}/{camera_id}",
        response_model=Camera,
        dependencies=[RequireAdmin],
        responses={**_NOT_FOUND, **_BAD_BODY},
        tags=["cameras"],
    )
    async def patch_camera(
        request: Request, device_id: IdString, camera_id: IdString, update: CameraUpdate
    ) -> Camera:
        """Change a camera's fields (admin): those sent; null clears one."""
        changed = await queries.update_camera(_hub(request).pool, device_id, camera_id, update)
        if changed is None:
            raise HTTPException(404, "camera not registered")
        return changed

    @api.delete(
        "/v1/cameras/{device_id}/{camera_id}",
        status_code=204,
        dependencies=[RequireAdmin],
        responses=_NOT_FOUND,
        tags=["cameras"],
    )
    async def delete_camera(request: Request, device_id: IdString, camera_id: IdString) -> Response:
        """Unregister a camera (admin). Its events stay; it no longer counts for a site."""
        if not await queries.delete_camera(_hub(request).pool, device_id, camera_id):
            raise HTTPException(404, "camera not registered")
        return Response(status_code=204)

    @api.get(
        "/v1/cameras/{device_id}/{camera_id}/recent",
        response_model=RecentEvents,
        tags=["live"],
    )
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

    # --- live -----------------------------------------------------------------------------------

    @api.post("/v1/live/token", response_model=LiveToken, tags=["live"])
    async def post_live_token(
        request: Request,
        response: Response,
        key: Annotated[ApiKey, Depends(require_scope("read"))],
    ) -> LiveToken:
        """A token that opens ``/v1/live/events`` for a short while (``?token=`` or the
        ``hub_live_token`` cookie this also sets), for browsers, whose EventSource cannot
        send an API key."""
        tokens: LiveTokens = request.app.state.live_tokens
        token, expires = tokens.mint(key)
        response.set_cookie(
            LIVE_COOKIE,
            token,
            max_age=tokens.ttl_s,
            path="/v1/live",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return LiveToken(
            token=token,
            expires_at=datetime.fromtimestamp(expires, UTC),
            expires_in=tokens.ttl_s,
        )

    app.include_router(api)
    app.include_router(dashboard.router)  # /dashboard: the page, no key needed to load it

    @app.get(
        "/v1/live/events",
        dependencies=[RequireLive],
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "Server-Sent Events: `event: event` (a stored PersonEvent, "
                "with `id`), `event: occupancy`, `event: status`.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_AUTH,
            422: {"description": "A parameter is invalid."},
            503: {"description": "Redis (the live cache) is off."},
        },
        tags=["live"],
    )
    async def live_events(
        request: Request,
        types: Annotated[
            list[LiveKind] | None,
            Query(description="What to stream (repeat for several); default: event."),
        ] = None,
        device_id: OptionalId = None,
        camera_id: OptionalId = None,
        site: Site = None,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                max_length=64,
                description="Sent by EventSource on reconnect: the stream resumes after it.",
            ),
        ] = None,
        after: Annotated[
            str | None,
            Query(max_length=64, description="As Last-Event-ID, for clients that cannot set it."),
        ] = None,
    ) -> StreamingResponse:
        """Events as they are stored (and, if asked, occupancy and status), as
        Server-Sent Events, from every hub sharing the Redis. Auth: a read key in a
        header, or a token from ``POST /v1/live/token`` in ``?token=`` or its cookie."""
        h = _hub(request)
        if not h.cache.enabled:
            raise HTTPException(503, "live cache disabled: Redis was not reachable at startup")
        resume = last_event_id or after
        if resume is not None:
            try:
                stream_id_key(resume)
            except ValueError as exc:
                raise HTTPException(422, "Last-Event-ID is not an id this stream sent") from exc
        cameras = None
        if site is not None:
            cameras = frozenset(
                (c.device_id, c.camera_id) for c in await queries.cameras(h.pool, site=site)
            )
        subscription = Subscription(
            kinds=frozenset(types or ("event",)) & frozenset(LIVE_KINDS),
            device_id=device_id,
            camera_id=camera_id,
            cameras=cameras,
        )

        async def body() -> AsyncIterator[bytes]:
            async with h.cache.subscribe(subscription, resume) as feed:
                # Subscribed first: whatever is stored after the client reads this line
                # reaches it.
                yield b"retry: 3000\n\n"
                while not feed.overflowed:
                    message = await feed.next(_HEARTBEAT_S)
                    if message is None:
                        yield b": keep-alive\n\n"
                        continue
                    head = f"event: {message.kind}\n"
                    if message.kind == "event":
                        head += f"id: {message.id}\n"
                    yield f"{head}data: {message.data}\n\n".encode()

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # --- operations -------------------------------------------------------------------------

    @app.get(
        "/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["operations"]
    )
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
            rollups=h.rollups.state,
            rollup_rounds=h.rollups.rounds,
        )
        return JSONResponse(health.model_dump(), status_code=200 if db and mqtt else 503)

    @app.get(
        "/metrics",
        dependencies=[] if settings.metrics_public else [RequireMetrics],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **_AUTH},
        tags=["operations"],
    )
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
