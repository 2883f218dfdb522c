"""Stored events: ``/v1/events`` (pages with a cursor) and ``/v1/export/events`` (every
matching event as one streamed file)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from cloud_hub.api.auth import RequireRead
from cloud_hub.api.deps import Pool, Settings
from cloud_hub.api.export import MEDIA_TYPES, stream_events
from cloud_hub.api.params import EventQ, Limit, time_range
from cloud_hub.api.responses import BAD_QUERY, READ
from cloud_hub.queries.events import events_page
from cloud_hub.schemas import EventsPage, ExportFormat

router = APIRouter(dependencies=[RequireRead], responses=READ)


@router.get("/v1/events", response_model=EventsPage, responses=BAD_QUERY, tags=["events"])
async def get_events(
    pool: Pool,
    where: EventQ,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> EventsPage:
    """Stored events oldest first by ``(last_seen, event_id)``; follow ``next_cursor``
    until it is null to read each event exactly once, even while new ones arrive."""
    try:
        return await events_page(pool, limit, cursor, where=where)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.get(
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
        **BAD_QUERY,
    },
    tags=["events"],
)
async def export_events(
    pool: Pool,
    settings: Settings,
    where: EventQ,
    format: Annotated[
        ExportFormat, Query(description="csv (with a header row), json (an array), ndjson.")
    ] = "csv",
) -> StreamingResponse:
    """Every matching event, oldest first, as a file streamed batch by batch: any
    range at flat memory. Default range: the last 24 hours. A response cut short by a
    failure ends without its final chunk, so clients see it as incomplete."""
    start, end = time_range(where.start, where.end)
    name = f"events-{start:%Y%m%dT%H%M%SZ}-{end:%Y%m%dT%H%M%SZ}.{format}"
    return StreamingResponse(
        stream_events(
            pool, replace(where, start=start, end=end), format, settings.export_batch_rows
        ),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
