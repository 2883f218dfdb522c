"""HTTP behaviour every response shares, as two small ASGI middlewares.

- :class:`DefaultHeaders`: ``X-Content-Type-Options: nosniff`` and ``Cache-Control:
  no-store`` on every response that does not set its own (the dashboard's static files
  keep ``no-cache``: they hold no data). API answers are people counts behind a key;
  no proxy or browser cache should keep them.
- :class:`HeadAsGet`: ``HEAD`` answered as ``GET`` without the body. FastAPI registers
  ``@app.get`` routes for GET only (Starlette's own routes add HEAD, FastAPI's do not),
  and listing HEAD on every route would double the OpenAPI operations. A streamed
  response (exports, the live stream) is stopped at its first chunk, so a HEAD never
  runs an export to its end or holds a stream open.

Pure ASGI rather than ``BaseHTTPMiddleware``, which would buffer nothing here but runs
each request in a task group of its own.
"""

from __future__ import annotations

import contextlib

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class DefaultHeaders:
    """Adds :data:`SECURITY_HEADERS` to each response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _HeadAnsweredError(Exception):
    """Raised into a streaming response once a HEAD's headers went out: stops it."""


class HeadAsGet:
    """Routes ``HEAD`` as ``GET`` and sends the headers only.

    The server (uvicorn) leaves the body out of a HEAD answer by itself, going by its
    own copy of the scope, which still says HEAD; this middleware makes the route match
    and ends the response after the headers, so a streamed body stops there too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def send_headers_only(message: Message) -> None:
            nonlocal ended
            if ended:
                raise _HeadAnsweredError
            if message["type"] == "http.response.body":
                ended = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if message.get("more_body", False):
                    raise _HeadAnsweredError
                return
            await send(message)

        with contextlib.suppress(_HeadAnsweredError):
            await self.app({**scope, "method": "GET"}, receive, send_headers_only)
