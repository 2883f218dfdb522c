"""What only a real TimescaleDB server has: its own job scheduler running the hub's
refresh, compression and retention policies with no call from the hub, many
connections, and ingest and queries at the same time (``.ci/timescaledb.sh``)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from cloud_hub.settings import HubSettings
from cloud_hub.storage.db import prepare_database
from cloud_hub.storage.rollups import hub_runs_jobs
from tests.conftest import HubFactory, make_event
from tests.hub.conftest import StorageDb
from tests.hub.test_storage import dataset, run, store, with_conn


async def _job_state(conn: asyncpg.Connection) -> dict[str, Any]:
    """Per policy: successful and failed runs; compressed chunks; materialised rows."""
    jobs = await conn.fetch(
        """SELECT j.proc_name, j.hypertable_name, s.total_successes, s.total_failures
           FROM timescaledb_information.jobs j
           JOIN timescaledb_information.job_stats s USING (job_id)
           WHERE j.hypertable_name LIKE 'stats%' OR j.hypertable_name = 'person_events'"""
    )
    compressed = await conn.fetchval(
        """SELECT count(*) FROM timescaledb_information.chunks
           WHERE hypertable_name = 'person_events' AND is_compressed"""
    )
    materialised = {}
    for view in ("stats_hourly", "stats_daily"):
        mat = await conn.fetchval(
            """SELECT format('%I.%I', materialization_hypertable_schema,
                             materialization_hypertable_name)
               FROM timescaledb_information.continuous_aggregates WHERE view_name = $1""",
            view,
        )
        materialised[view] = int(await conn.fetchval(f"SELECT coalesce(sum(events), 0) FROM {mat}"))
    return {
        "runs": {
            (r["proc_name"], r["hypertable_name"]): (r["total_successes"], r["total_failures"])
            for r in jobs
        },
        "compressed": int(compressed),
        "materialised": materialised,
    }


def test_the_database_scheduler_refreshes_and_compresses_by_itself(
    timescale_storage: StorageDb,
) -> None:
    # auto: the hub leaves the policies to the scheduler it sees; refresh every second,
    # compress chunks a day old (the events span three days, one-day chunks).
    settings = HubSettings(
        database_url=timescale_storage.url,
        rollup_jobs="auto",
        rollup_refresh_s=1.0,
        compress_after_days=1,
        chunk_interval_days=1,
    )
    run(prepare_database(timescale_storage.url, settings))
    now = datetime.now(UTC)
    events = dataset(now, 400)
    assert len(store(timescale_storage, events)) == len(events)  # the hub's write path
    assert run(with_conn(timescale_storage, lambda c: hub_runs_jobs(c, settings))) is False

    # From here on nothing but the database runs: no maintain(), no run_job, no hub.
    watermark = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
        seconds=settings.rollup_lag_s
    )
    settled = watermark.replace(minute=0)  # hours the hourly refresh policy materialises
    expected_hourly = sum(1 for e in events if e.last_seen < settled - timedelta(hours=1))
    deadline = time.monotonic() + 90
    while True:
        state = run(with_conn(timescale_storage, _job_state))
        runs = state["runs"]
        done = (
            state["compressed"] >= 1
            and state["materialised"]["stats_hourly"] >= expected_hourly
            and state["materialised"]["stats_daily"] > 0
            and all(ok >= 1 for ok, _ in runs.values())
        )
        if done or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert set(runs) == {
        ("policy_refresh_continuous_aggregate", "stats_hourly"),
        ("policy_refresh_continuous_aggregate", "stats_daily"),
        ("policy_refresh_continuous_aggregate", "stats_hourly_fleet"),
        ("policy_refresh_continuous_aggregate", "stats_daily_fleet"),
        ("policy_compression", "person_events"),
    }, runs
    assert all(ok >= 1 and failed == 0 for ok, failed in runs.values()), runs
    assert state["compressed"] >= 1, state
    assert state["materialised"]["stats_hourly"] >= expected_hourly > 0, state
    assert state["materialised"]["stats_daily"] > 0, state

    # What the scheduler materialised and compressed answers as the raw events do.
    async def compare(conn: asyncpg.Connection) -> tuple[int, int, int]:
        raw = await conn.fetchval("SELECT count(*) FROM person_events")
        hourly = await conn.fetchval("SELECT sum(events) FROM stats_hourly")
        daily = await conn.fetchval("SELECT sum(events) FROM stats_daily")
        return int(raw), int(hourly), int(daily)

    assert run(with_conn(timescale_storage, compare)) == (len(events),) * 3


def test_concurrent_ingest_and_queries_on_many_connections(
    timescale_storage: StorageDb,
    hub_factory: HubFactory,
    publish_events: Any,
    wait_until: Any,
) -> None:
    """A hub with a wide pool ingests while readers query stats and events: every event
    is stored once, no request fails, and the server really serves many connections."""
    # Refresh every second: events older than HUB_ROLLUP_LAG_S reach hours the database's
    # scheduler may have materialised already, and count "at the next refresh" (settings,
    # rollup_late_days), so the totals are checked once one has run.
    hub = hub_factory.start(
        database_url=timescale_storage.url,
        db_pool_size=16,
        rollup_jobs="auto",
        rollup_refresh_s=1.0,
    )
    now = datetime.now(UTC)
    events = [
        make_event(f"dev-{i % 20}", f"cam-{i % 3}", track_id=i,
                   last_seen=now - timedelta(seconds=i % 7200))
        for i in range(6000)
    ]  # fmt: skip
    start = (now - timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    end = (now + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    queries = [
        f"/v1/stats?start={start}&end={end}&bucket=minute",
        f"/v1/stats?start={start}&end={end}&group_by=device&shares=true",
        f"/v1/events?start={start}&end={end}&limit=200",
        "/v1/devices",
    ]
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()
    peak = [0]

    def reader(offset: int) -> None:
        i = offset
        while not stop.is_set():
            status, body = hub.request(queries[i % len(queries)])
            if status != 200:
                failures.append(f"{queries[i % len(queries)]}: {status} {body}")
            answered[0] += 1
            i += 1

    async def connections(conn: asyncpg.Connection) -> int:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )
        )

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], run(with_conn(timescale_storage, connections)))
            time.sleep(0.2)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    threads.append(threading.Thread(target=watch))
    for thread in threads:
        thread.start()
    try:
        for k in range(0, len(events), 1500):
            publish_events(hub.topic_root, events[k : k + 1500])
        wait_until(lambda: hub.metric("hub_events_stored_total") == len(events), 60, "all stored")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures[:5]
    assert answered[0] >= 20
    assert peak[0] >= 10, f"at most {peak[0]} connections seen"

    async def stored(conn: asyncpg.Connection) -> tuple[int, int]:
        rows = await conn.fetchval("SELECT count(*) FROM person_events")
        ids = await conn.fetchval("SELECT count(DISTINCT event_id) FROM person_events")
        return int(rows), int(ids)

    assert run(with_conn(timescale_storage, stored)) == (len(events), len(events))
    hourly = f"/v1/stats?start={start}&end={end}&bucket=hour"
    wait_until(lambda: hub.get(hourly)["totals"]["total"] == len(events), 30, "every event")
