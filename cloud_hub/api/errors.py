"""The app's exception handlers: storage outages answer 503, and validation errors 422
without echoing large inputs."""

from __future__ import annotations

import asyncpg
import structlog
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

_ECHO_MAX = 100  # characters of an invalid input a 422 repeats

# What a request meets when the database or Redis is unreachable.
STORAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    RedisError,
)


async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """503 for :data:`STORAGE_ERRORS`: the client may try again."""
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
