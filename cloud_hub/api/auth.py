"""FastAPI dependencies that check API keys (the keys themselves: ``cloud_hub.security.apikeys``).

``/healthz`` is always open; ``/metrics`` needs a ``metrics`` key unless
``HUB_METRICS_PUBLIC=true``; everything else needs ``read``, and endpoints that change
state (cameras) need ``admin``. The live stream also takes a short-lived token
(``cloud_hub.live.tokens``) in its URL or a cookie, as browsers cannot send headers
there. See docs/security.md.

FastAPI reads a request's body before it runs any dependency, so the key checks above
would come after a body was read in full. :class:`KeyBeforeBody` checks the key of a
``/v1`` request that carries a body before anything reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    APIKeyQuery,
    HTTPAuthorizationCredentials,
    HTTPBearer,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_hub.live.tokens import LiveTokens
from cloud_hub.security.apikeys import ApiKey, allows, find_key
from cloud_hub.security.apikeys import Scope as KeyScope

LIVE_COOKIE = "hub_live_token"

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key (cloud-hub apikey create)."
)
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")

_live_query = APIKeyQuery(
    name="token",
    auto_error=False,
    description="A live token from POST /v1/live/token (EventSource cannot send headers).",
)
_live_cookie = APIKeyCookie(
    name=LIVE_COOKIE, auto_error=False, description="The live token as POST /v1/live/token sets it."
)

_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="cloud-hub"'}


def _check(request: Request, presented: str | None, needed: KeyScope) -> ApiKey:
    if not presented:
        raise HTTPException(401, "an API key is required", headers=_UNAUTHORIZED)
    keys: tuple[ApiKey, ...] = request.app.state.api_keys
    key = find_key(keys, presented)
    if key is None:
        raise HTTPException(401, "unknown API key", headers=_UNAUTHORIZED)
    if not allows(key.scope, needed):
        raise HTTPException(403, f"this key's scope is {key.scope!r}; {needed!r} is needed")
    request.state.api_key_name = key.name
    return key


def require_scope(needed: KeyScope) -> Callable[..., Awaitable[ApiKey]]:
    """A FastAPI dependency: the caller's key, which must allow ``needed``.

    401 without a key or with an unknown one, 403 when the key's scope is too small.
    Use as ``dependencies=[Depends(require_scope("admin"))]`` or as a parameter
    ``key: Annotated[ApiKey, Depends(require_scope("read"))]`` to know the caller.
    """

    async def dependency(
        request: Request,
        header_key: Annotated[str | None, Depends(_api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        return _check(request, header_key or (bearer.credentials if bearer else None), needed)

    return dependency


async def require_live(
    request: Request,
    header_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[str | None, Depends(_live_query)],
    cookie: Annotated[str | None, Depends(_live_cookie)],
) -> ApiKey:
    """The live stream: a ``read`` API key in a header (curl, servers), or a live token
    in ``?token=`` or the ``hub_live_token`` cookie (browsers). 401 otherwise."""
    presented = header_key or (bearer.credentials if bearer else None)
    if presented:
        return _check(request, presented, "read")
    tokens: LiveTokens = request.app.state.live_tokens
    keys: tuple[ApiKey, ...] = request.app.state.api_keys
    for candidate in (token, cookie):
        if candidate:
            key = tokens.verify(candidate, keys, "read")
            if key is not None:
                request.state.api_key_name = key.name
                return key
    if token or cookie:
        raise HTTPException(401, "invalid or expired live token", headers=_UNAUTHORIZED)
    raise HTTPException(401, "an API key or a live token is required", headers=_UNAUTHORIZED)


RequireRead = Depends(require_scope("read"))
RequireAdmin = Depends(require_scope("admin"))
RequireMetrics = Depends(require_scope("metrics"))
RequireLive = Depends(require_live)


def _carries_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class KeyBeforeBody:
    """ASGI middleware: a ``/v1`` request with a body (a Content-Length above 0, or a
    chunked one) gets 401 before its body is read unless it presents a key the hub
    knows, so nobody without a key can make the hub read (and hold) a body. The scope
    the endpoint needs is checked by its dependency as before, after the body, which
    ``HUB_MAX_BODY_BYTES`` bounds. Paths outside ``/v1`` take no bodies and read none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/") and _carries_body(scope):
            request = Request(scope)  # headers only: receive is never called
            header_key = await _api_key_header(request)
            bearer = await _bearer(request)
            presented = header_key or (bearer.credentials if bearer else None)
            keys: tuple[ApiKey, ...] = request.app.state.api_keys
            if not presented or find_key(keys, presented) is None:
                detail = "unknown API key" if presented else "an API key is required"
                response = JSONResponse({"detail": detail}, 401, headers=_UNAUTHORIZED)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
