"""What the routers document beside their answers (``responses=`` in OpenAPI), and the
encoding of large answers off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Response
from pydantic import BaseModel

Responses = dict[int | str, dict[str, Any]]

NOT_FOUND: Responses = {404: {"description": "Not registered / not known."}}
BAD_QUERY: Responses = {
    422: {"description": "A parameter is invalid, or the answer would be too big."}
}
TOO_BIG: Responses = {
    422: {
        "description": "A parameter is invalid, or the answer would be too big: its "
        "bucket x group pairs, estimated before the query, exceed HUB_STATS_MAX_PAIRS "
        "(the message gives the estimate, the limit and how to narrow the request)."
    }
}
DB_DOWN: Responses = {
    503: {"description": "The database (or, for live data, Redis) is unreachable."}
}
AUTH: Responses = {
    401: {"description": "No API key, or one the hub does not know."},
    403: {"description": "The key's scope is too small."},
}
BAD_BODY: Responses = {
    400: {"description": "The body is not JSON (or the request is not valid HTTP at all)."},
    413: {"description": "The body is larger than HUB_MAX_BODY_BYTES."},
}
# What any request may get from the HTTP server itself, before the API sees it: a
# request that is not valid HTTP (an empty Content-Length, a header name with spaces).
NOT_HTTP: Responses = {
    400: {
        "description": "The request is not valid HTTP; the server refused it unread.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
# What every route behind a read key may answer besides its own.
READ: Responses = {**AUTH, **DB_DOWN}
# The 503 detail of live data while the live cache is off.
CACHE_OFF = "live cache disabled: Redis was not reachable at startup"


async def json_answer(answer: BaseModel) -> Response:
    """A possibly large answer (tens of MB at HUB_STATS_MAX_PAIRS) encoded in a worker
    thread; FastAPI would encode it on the event loop, which ingest shares. The route's
    ``response_model`` still documents it; the model was validated when it was built."""
    body = await asyncio.to_thread(answer.model_dump_json)
    return Response(body, media_type="application/json")
