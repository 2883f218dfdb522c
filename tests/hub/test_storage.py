"""Storage on both backends: migrations, idempotent writes, rollups that answer exactly
what raw events would, at the watermark boundary, for late events, and under
compression and retention. Every test runs on plain PostgreSQL and on TimescaleDB."""

from __future__ import annotations

import asyncio
import random
import struct
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest

from cloud_hub import queries
from cloud_hub.settings import HubSettings
from cloud_hub.storage import rollups
from cloud_hub.storage.db import Backend, detect_backend, migrate, open_pool, prepare_database
from cloud_hub.storage.event_writes import store_batch
from edge_agent.contract import Direction, PersonEvent, event_watcher
from tests.conftest import make_event
from tests.hub.conftest import StorageDb

T = TypeVar("T")
Key = tuple[datetime, str, str, str]
# Per key: events (passers-by), first visits, ages counted, watchers, attentions counted
# (exact), then the sums of ages, dwell and attention (approximate: real columns).
Measures = tuple[int, int, int, int, int, float, float, float]
SITES = {("dev-a", "cam-1"): "lobby", ("dev-a", "cam-2"): "street", ("dev-b", "cam-1"): "lobby"}


def run(coro: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await coro

    return asyncio.run(wrap())


def settings_for(db: StorageDb, **overrides: Any) -> HubSettings:
    return HubSettings(database_url=db.url, **overrides)


async def with_pool(db: StorageDb, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    pool = await open_pool(db.url, 2)
    try:
        return await work(pool)
    finally:
        await pool.close()


async def with_conn(db: StorageDb, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    conn = await asyncpg.connect(db.url)
    try:
        return await work(conn)
    finally:
        await conn.close()


def store(db: StorageDb, events: Sequence[PersonEvent]) -> set[uuid.UUID]:
    async def work(pool: asyncpg.Pool) -> set[uuid.UUID]:
        new: set[uuid.UUID] = set()
        for i in range(0, len(events), 250):  # batches of the hub's size
            new.update(await store_batch(pool, list(events[i : i + 250]), []))
        return new

    return run(with_pool(db, work))


def maintain(db: StorageDb, settings: HubSettings) -> None:
    run(with_conn(db, lambda conn: rollups.maintain(conn, settings)))


def register_cameras(db: StorageDb) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO cameras (device_id, camera_id, site) VALUES ($1, $2, $3)",
            [(d, c, s) for (d, c), s in SITES.items()],
        )

    run(with_conn(db, work))


def _f32(value: float) -> float:
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


def _band(age: float | None) -> str:
    if age is None:
        return "unknown"
    for limit, band in ((13, "0-12"), (18, "13-17"), (25, "18-24"), (35, "25-34")):
        if age < limit:
            return band
    for limit, band in ((45, "35-44"), (55, "45-54"), (65, "55-64")):
        if age < limit:
            return band
    return "65+"


def reference(
    events: Sequence[PersonEvent],
    start: datetime,
    end: datetime,
    bucket: str,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
) -> dict[Key, Measures]:
    """What the stats must say, aggregated here from the events themselves: ages and
    attention are watchers' (a schema 1 event is a watcher of unknown attention)."""
    acc: dict[Key, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0.0, 0.0, 0.0])
    for e in events:
        if not start <= e.last_seen < end:
            continue
        if (device_id and e.device_id != device_id) or (camera_id and e.camera_id != camera_id):
            continue
        if site and SITES.get((e.device_id, e.camera_id)) != site:
            continue
        label = queries._truncate(e.last_seen, bucket)  # type: ignore[arg-type]
        age = e.age.value if e.age else None
        key = (
            label,
            e.gender.value.value if e.gender else "unknown",
            _band(None if age is None else _f32(age)),
            e.direction.value if e.direction else "none",
        )
        watcher = event_watcher(e)
        attention = e.attention_s if watcher else None
        row = acc[key]
        row[0] += 1
        row[1] += e.return_of is None
        row[2] += watcher and age is not None
        row[3] += watcher
        row[4] += attention is not None
        row[5] += _f32(age) if watcher and age is not None else 0.0
        row[6] += _f32(e.dwell_s)
        row[7] += _f32(attention) if attention is not None else 0.0
    return {
        k: (int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4]), v[5], v[6], v[7])
        for k, v in acc.items()
    }


def answer(db: StorageDb, *args: Any, **kwargs: Any) -> dict[Key, Measures]:
    rows = run(with_pool(db, lambda pool: queries.stats_rows(pool, *args, **kwargs)))
    return {
        (r.bucket, r.gender, r.age_band, r.direction): (
            r.events,
            r.visitors,
            r.age_n,
            r.watchers,
            r.attention_n,
            r.age_sum,
            r.dwell_sum,
            r.attention_sum,
        )
        for r in rows
    }


def assert_same(got: dict[Key, Any], want: dict[Key, Any]) -> None:
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    for key, value in want.items():
        assert got[key][:5] == value[:5], key
        assert got[key][5:] == pytest.approx(value[5:], rel=1e-6, abs=1e-3), key


def dataset(now: datetime, count: int = 600, seed: int = 7) -> list[PersonEvent]:
    """Events over the last ~3 days, every dimension varied, some on exact boundaries:
    schema 2 watchers, passers-by who never faced the camera (no gender, no age) and
    schema 1 events of 0.1 agents (watchers of unknown attention)."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        device, camera = rng.choice([("dev-a", "cam-1"), ("dev-a", "cam-2"), ("dev-b", "cam-1"),
                                     ("dev-b", "cam-2")])  # fmt: skip
        when = now - timedelta(seconds=rng.uniform(60, 3 * 86400))
        if i % 50 == 0:  # exactly on an hour, or a midnight
            when = rollups.floor_hour(when) if i % 100 else rollups.floor_day(when)
        dwell = round(rng.uniform(0.5, 120), 2)
        kind = rng.choice(["watcher", "watcher", "passer-by", "schema 1"])
        face = kind != "passer-by"
        event = make_event(
            device,
            camera,
            last_seen=when,
            dwell_s=dwell,
            gender=rng.choice(["female", "male", None]) if face else None,
            age=rng.choice([None, rng.uniform(1, 90)]) if face else None,
            track_id=i,
            watcher=face,
            attention_s=round(rng.uniform(0, dwell), 2) if face else 0.0,
            schema_version=1 if kind == "schema 1" else 2,
        )
        updates: dict[str, Any] = {"direction": rng.choice([Direction.IN, Direction.OUT, None])}
        if rng.random() < 0.2:
            updates["return_of"] = uuid.uuid4()
        events.append(event.model_copy(update=updates))
    return events


def queries_to_check(now: datetime) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    hour = rollups.floor_hour(now)
    day = rollups.floor_day(now)
    return [
        ((now - timedelta(hours=50), now, "hour"), {}),
        ((now - timedelta(days=3, minutes=17), now, "day"), {}),
        ((day - timedelta(days=2), day + timedelta(days=1), "day"), {}),
        ((hour - timedelta(hours=30), hour + timedelta(hours=1), "hour"), {"device_id": "dev-a"}),
        ((now - timedelta(days=3), now, "day"), {"device_id": "dev-b", "camera_id": "cam-1"}),
        ((now - timedelta(days=3), now, "hour"), {"site": "lobby"}),
        ((now - timedelta(days=3), now + timedelta(hours=1), "day"), {"site": "street"}),
        ((now - timedelta(hours=3), now, "minute"), {}),
        (
            (
                hour - timedelta(hours=20, minutes=50),
                hour - timedelta(hours=20, minutes=10),
                "hour",
            ),
            {},
        ),
    ]


def check_all(db: StorageDb, events: Sequence[PersonEvent], now: datetime) -> None:
    for args, kwargs in queries_to_check(now):
        assert_same(answer(db, *args, **kwargs), reference(events, *args, **kwargs))


def test_migrations_build_each_backend(storage: StorageDb) -> None:
    settings = settings_for(storage)
    applied = run(prepare_database(storage.url, settings))
    assert f"004_storage.{storage.backend}.sql" in applied
    assert f"006_occupancy_storage.{storage.backend}.sql" in applied
    assert run(prepare_database(storage.url, settings)) == []  # nothing twice

    async def inspect(conn: asyncpg.Connection) -> dict[str, Any]:
        info: dict[str, Any] = {"backend": await detect_backend(conn)}
        info["pk"] = await conn.fetchval(
            """SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
               WHERE i.indrelid = 'person_events'::regclass AND i.indisprimary"""
        )
        if info["backend"] is Backend.TIMESCALEDB:
            info["realtime"] = await conn.fetch(
                """SELECT view_name, materialized_only
                   FROM timescaledb_information.continuous_aggregates ORDER BY view_name"""
            )
            info["jobs"] = sorted(
                (r["proc_name"], r["hypertable_name"])
                for r in await conn.fetch(
                    """SELECT proc_name, hypertable_name FROM timescaledb_information.jobs
                       WHERE hypertable_name IS NOT NULL"""
                )
            )
        else:
            info["partitions"] = await conn.fetchval(
                "SELECT count(*) FROM person_events_partitions"
            )
        return info

    info = run(with_conn(storage, inspect))
    assert info["backend"].value == storage.backend
    assert info["pk"] == ["event_id", "last_seen"]
    if storage.backend == "timescaledb":
        assert [tuple(r) for r in info["realtime"]] == [
            ("stats_daily", False),
            ("stats_daily_fleet", False),
            ("stats_hourly", False),
            ("stats_hourly_fleet", False),
        ]
        assert info["jobs"] == [
            ("policy_compression", "person_events"),
            ("policy_refresh_continuous_aggregate", "stats_daily"),
            ("policy_refresh_continuous_aggregate", "stats_daily_fleet"),
            ("policy_refresh_continuous_aggregate", "stats_hourly"),
            ("policy_refresh_continuous_aggregate", "stats_hourly_fleet"),
        ]
    else:
        assert info["partitions"] in (3, 4)  # from a width back to two widths ahead


def test_writes_are_idempotent(storage: StorageDb) -> None:
    run(prepare_database(storage.url, settings_for(storage)))
    now = datetime.now(UTC)
    events = dataset(now, 300)
    assert store(storage, events) == {e.event_id for e in events}
    assert store(storage, events) == set()  # a redelivered batch
    assert store(storage, [*events[:1], make_event("dev-c")]) != set()

    async def counts(conn: asyncpg.Connection) -> tuple[int, int]:
        stored = await conn.fetchval("SELECT count(*) FROM person_events")
        devices = await conn.fetchval("SELECT sum(events) FROM devices")
        return int(stored), int(devices)

    assert run(with_conn(storage, counts)) == (301, 301)


def test_stats_answer_what_raw_events_say(storage: StorageDb) -> None:
    settings = settings_for(storage)
    run(prepare_database(storage.url, settings))
    register_cameras(storage)
    now = datetime.now(UTC)
    events = dataset(now)
    store(storage, events)
    check_all(storage, events, now)  # nothing materialised: all aggregated at query time
    maintain(storage, settings)
    check_all(storage, events, now)  # materialised up to the watermark

    # Counts keep the shape /v1/stats has always had.
    start, end = now - timedelta(hours=50), now
    totals, buckets = run(with_pool(storage, lambda pool: queries.stats(pool, start, end, "hour")))
    expected = [e for e in events if start <= e.last_seen < end]
    assert totals.total == len(expected) == sum(b.total for b in buckets)
    assert len(buckets) == 51
    # Gender describes watchers: passers-by who never faced the camera are not "unknown".
    watchers = [e for e in expected if event_watcher(e)]
    assert totals.watchers == len(watchers) < totals.passers_by == totals.total
    assert totals.gender["unknown"] == sum(1 for e in watchers if e.gender is None)
    assert sum(totals.gender.values()) == sum(totals.age.values()) == len(watchers)


def test_newest_and_late_events_at_the_watermark(storage: StorageDb) -> None:
    settings = settings_for(storage)
    run(prepare_database(storage.url, settings))
    register_cameras(storage)
    now = datetime.now(UTC)
    events = dataset(now, 300)
    store(storage, events)
    maintain(storage, settings)
    # The watermark now stands at the hour that ended at least HUB_ROLLUP_LAG_S ago.
    mark = rollups.floor_hour(now - timedelta(seconds=settings.rollup_lag_s))

    # Above it: counted at once, no refresh needed (raw aggregation at query time),
    # including an event exactly on the watermark and one a microsecond before `now`.
    fresh = [
        make_event("dev-a", "cam-1", last_seen=mark, track_id=1001),
        make_event("dev-a", "cam-1", last_seen=now - timedelta(microseconds=1), track_id=1002),
        make_event("dev-b", "cam-2", last_seen=now - timedelta(seconds=30), track_id=1003),
    ]
    store(storage, fresh)
    events += fresh
    check_all(storage, events, now)

    # Below it: an hour already materialised changes.
    late_hour = mark - timedelta(hours=20)
    late = [
        make_event("dev-b", "cam-1", last_seen=late_hour, track_id=2001),
        make_event("dev-b", "cam-1", last_seen=late_hour + timedelta(minutes=59), track_id=2002),
        make_event("dev-a", "cam-2", last_seen=mark - timedelta(microseconds=1), track_id=2003),
    ]
    assert len(store(storage, late)) == 3
    events += late
    if storage.backend == "plain":
        # The hub's views answer those (device, hour)s from raw events until it has
        # re-aggregated them; TimescaleDB counts them from its next refresh on.
        check_all(storage, events, now)
    maintain(storage, settings)
    check_all(storage, events, now)


def test_compression_and_retention(storage: StorageDb) -> None:
    settings = settings_for(
        storage, chunk_interval_days=1, compress_after_days=1, retention_days=10, rollup_late_days=5
    )
    run(prepare_database(storage.url, settings))
    register_cameras(storage)
    now = datetime.now(UTC)
    old_day = rollups.floor_day(now - timedelta(days=20))
    old = [
        make_event("dev-a", "cam-1", last_seen=old_day + timedelta(hours=h, minutes=5), track_id=h)
        for h in range(0, 24, 3)
    ]
    recent = dataset(now, 200)
    store(storage, old + recent)
    maintain(storage, settings)  # materialises everything, then compresses and drops

    async def raw_count(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM person_events"))

    assert run(with_conn(storage, raw_count)) == len(recent)  # the old day's raw rows: gone
    # ... but its hours and its day are still answered from the rollups.
    day_range = (old_day, old_day + timedelta(days=1))
    assert_same(answer(storage, *day_range, "day"), reference(old, *day_range, "day"))
    assert_same(answer(storage, *day_range, "hour"), reference(old, *day_range, "hour"))

    if storage.backend == "timescaledb":

        async def compressed(conn: asyncpg.Connection) -> int:
            return int(
                await conn.fetchval(
                    """SELECT count(*) FROM timescaledb_information.chunks
                       WHERE hypertable_name = 'person_events' AND is_compressed"""
                )
            )

        assert run(with_conn(storage, compressed)) >= 2

    # A late event into a compressed span, and a redelivery of a stored one: stored once.
    late = make_event("dev-b", "cam-2", last_seen=now - timedelta(days=2, hours=1), track_id=77)
    assert store(storage, [late, recent[0]]) == {late.event_id}
    assert store(storage, [late]) == set()
    maintain(storage, settings)
    check_all(storage, [*recent, late], now)


def test_upgrade_from_a_deployed_database(storage: StorageDb) -> None:
    """A database at migration 002 with events in it (as deployed) upgrades in place."""
    now = datetime.now(UTC)
    # What a deployed hub held: schema 1 events of 0.1 agents (watchers, attention unknown).
    schema_1 = {"schema_version": 1, "watcher": None, "attention_s": None}
    events = [e.model_copy(update=schema_1) for e in dataset(now, 200)]

    async def old_hub(conn: asyncpg.Connection) -> None:
        await migrate(conn, settings_for(storage), up_to=2)
        await conn.execute(
            """INSERT INTO person_events (event_id, device_id, camera_id, track_id, first_seen,
                   last_seen, dwell_s, gender, age, direction, crops, return_of)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[],
                   $5::timestamptz[], $6::timestamptz[], $7::real[], $8::text[], $9::real[],
                   $10::text[], $11::integer[], $12::uuid[])""",
            [e.event_id for e in events],
            [e.device_id for e in events],
            [e.camera_id for e in events],
            [e.track_id for e in events],
            [e.first_seen for e in events],
            [e.last_seen for e in events],
            [e.dwell_s for e in events],
            [e.gender.value.value if e.gender else None for e in events],
            [e.age.value if e.age else None for e in events],
            [e.direction.value if e.direction else None for e in events],
            [e.crops for e in events],
            [e.return_of for e in events],
        )

    server, name = storage.url.rsplit("/", 1)

    async def create_database() -> None:
        admin = await asyncpg.connect(f"{server}/postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()

    run(create_database())
    if storage.backend == "timescaledb":  # a deployed 0.1 hub had created the extension
        run(with_conn(storage, lambda c: c.execute("CREATE EXTENSION timescaledb")))
    run(with_conn(storage, old_hub))
    settings = settings_for(storage)
    assert run(prepare_database(storage.url, settings)) == [
        "003_cameras.sql",
        f"004_storage.{storage.backend}.sql",
        "005_device_state.sql",
        f"006_occupancy_storage.{storage.backend}.sql",
    ] + (["007_fleet_rollups.plain.sql"] if storage.backend == "plain" else []) + [
        f"008_event_ids.{storage.backend}.sql",
        "009_rejected_topic.sql",
        f"010_watchers.{storage.backend}.sql",
        "011_share_inputs.sql",
    ] + (["012_fleet_aggregates.timescaledb.sql"] if storage.backend == "timescaledb" else [])
    register_cameras(storage)
    assert store(storage, events) == set()  # the copied rows still dedupe redeliveries
    check_all(storage, events, now)
    maintain(storage, settings)
    check_all(storage, events, now)


def test_same_answers_on_both_backends(
    plain_storage: StorageDb, timescale_storage: StorageDb
) -> None:
    now = datetime.now(UTC)
    events = dataset(now, 400, seed=11)
    answers = []
    for db in (plain_storage, timescale_storage):
        settings = settings_for(db)
        run(prepare_database(db.url, settings))
        register_cameras(db)
        store(db, events)
        maintain(db, settings)
        answers.append([answer(db, *args, **kwargs) for args, kwargs in queries_to_check(now)])
    for plain, timescale in zip(*answers, strict=True):
        assert_same(timescale, plain)
