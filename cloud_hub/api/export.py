"""Streamed exports: events as CSV, a JSON array or NDJSON, one database batch at a time.

The response body is produced while it is sent: each batch is one short keyset query
(``queries.events.event_batches``), formatted and handed to the server, so memory holds one
batch whatever the range, and no database connection or transaction stays open while a
slow client reads. If the database fails midway the connection is closed before the
final chunk, so the client sees an incomplete (chunked) response, never a short file
that looks whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from cloud_hub.queries.events import EVENT_COLUMNS, EventFilter, event_batches
from cloud_hub.schemas import ExportFormat
from edge_agent.contract import csv_cell

MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, int | float | str | bool):
        return value
    return str(value)  # uuid


def _row(record: asyncpg.Record) -> dict[str, Any]:
    row = {name: _plain(record[name]) for name in EVENT_COLUMNS if name != "models"}
    row["models"] = json.loads(record["models"])
    return {name: row[name] for name in EVENT_COLUMNS}


async def stream_events(
    pool: asyncpg.Pool, where: EventFilter, fmt: ExportFormat, batch_rows: int
) -> AsyncIterator[bytes]:
    """The export body, batch by batch."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(EVENT_COLUMNS)
        yield buffer.getvalue().encode()
    elif fmt == "json":
        yield b"["
    first = True
    async for batch in event_batches(pool, where, batch_rows):
        rows = [_row(record) for record in batch]
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerows([csv_cell(row[name]) for name in EVENT_COLUMNS] for row in rows)
            yield buffer.getvalue().encode()
        elif fmt == "ndjson":
            yield "".join(json.dumps(row) + "\n" for row in rows).encode()
        else:
            text = ",\n".join(json.dumps(row) for row in rows)
            yield (("\n" if first else ",\n") + text).encode()
        first = False
    if fmt == "json":
        yield b"\n]\n"
