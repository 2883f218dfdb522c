"""``/v1/live/events``: the live cache's (Redis) Server-Sent Events stream, and the
short-lived tokens that open it for browsers, whose EventSource cannot send an API key.
A camera's recent events, also from the cache, are under ``/v1/cameras``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from cloud_hub.api.auth import LIVE_COOKIE, RequireLive, RequireRead
from cloud_hub.api.deps import Cache, Pool, ReadKey, Tokens
from cloud_hub.api.params import CameraScope, LiveKinds, ResumeAfter
from cloud_hub.api.responses import AUTH, CACHE_OFF, READ
from cloud_hub.live.cache import LiveCache, Subscription, stream_id_key
from cloud_hub.queries.cameras import cameras
from cloud_hub.schemas import LiveToken

_HEARTBEAT_S = 15.0

router = APIRouter()


@router.post(
    "/v1/live/token",
    response_model=LiveToken,
    dependencies=[RequireRead],
    responses=READ,
    tags=["live"],
)
async def post_live_token(
    request: Request, response: Response, tokens: Tokens, key: ReadKey
) -> LiveToken:
    """A token that opens ``/v1/live/events`` for a short while (``?token=`` or the
    ``hub_live_token`` cookie this also sets), for browsers, whose EventSource cannot
    send an API key."""
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


@router.get(
    "/v1/live/events",
    dependencies=[RequireLive],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `event: event` (a stored PersonEvent, "
            "with `id`), `event: occupancy`, `event: status`.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **AUTH,
        422: {"description": "A parameter is invalid."},
        503: {"description": "Redis (the live cache) is off."},
    },
    tags=["live"],
)
async def live_events(
    pool: Pool,
    cache: Cache,
    kinds: LiveKinds,
    where: CameraScope,
    resume: ResumeAfter,
) -> StreamingResponse:
    """Events as they are stored (and, if asked, occupancy and status), as
    Server-Sent Events, from every hub sharing the Redis. Auth: a read key in a
    header, or a token from ``POST /v1/live/token`` in ``?token=`` or its cookie."""
    if not cache.enabled:
        raise HTTPException(503, CACHE_OFF)
    if resume is not None:
        try:
            stream_id_key(resume)
        except ValueError as exc:
            raise HTTPException(422, "Last-Event-ID is not an id this stream sent") from exc
    registered = None
    if where.site is not None:
        registered = frozenset(
            (c.device_id, c.camera_id) for c in await cameras(pool, site=where.site)
        )
    subscription = Subscription(
        kinds=kinds, device_id=where.device_id, camera_id=where.camera_id, cameras=registered
    )
    return StreamingResponse(
        _sse(cache, subscription, resume),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _sse(
    cache: LiveCache, subscription: Subscription, resume: str | None
) -> AsyncIterator[bytes]:
    """The stream's body: a retry hint, then each message, with a comment as heartbeat."""
    async with cache.subscribe(subscription, resume) as feed:
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
