"""FastAPI dependencies that check API keys (the keys themselves: ``cloud_hub.apikeys``).

``/healthz`` is always open; ``/metrics`` needs a ``metrics`` key unless
``HUB_METRICS_PUBLIC=true``; everything else needs ``read``, and endpoints that change
state will need ``admin``. See docs/security.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cloud_hub.apikeys import ApiKey, Scope, allows, find_key

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key (cloud-hub apikey create)."
)
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")

_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="cloud-hub"'}


def require_scope(needed: Scope) -> Callable[..., Awaitable[ApiKey]]:
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
        presented = header_key or (bearer.credentials if bearer else None)
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

    return dependency


RequireRead = Depends(require_scope("read"))
RequireAdmin = Depends(require_scope("admin"))
RequireMetrics = Depends(require_scope("metrics"))
