"""Passers-by, watchers, attention and dwell (person event schema 2) on each backend: a
known mix of schema 2 watchers, schema 2 passers-by (no face: no gender, no age) and
schema 1 events of 0.1 agents (watchers of unknown attention), whose figures are worked
out by hand below; events and exports carrying watcher and attention_s; a schema 1 event
through the broker; and an upgrade that keeps what retention had dropped."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from cloud_hub import queries
from cloud_hub.settings import HubSettings
from cloud_hub.storage import rollups
from cloud_hub.storage.db import (
    configure_storage,
    ensure_database,
    migrate,
    open_pool,
    prepare_database,
)
from edge_agent.contract import PersonEvent
from tests.conftest import (
    HubFactory,
    RunningHub,
    event_topic,
    make_event,
    publish_messages,
    wait_until,
)
from tests.hub.conftest import StorageDb
from tests.hub.old_hub import old_plain_round
from tests.hub.test_storage import (
    answer,
    assert_same,
    dataset,
    maintain,
    reference,
    run,
    settings_for,
    store,
    with_conn,
)

NEW_FIGURES = ("passers_by", "watchers", "watcher_rate", "mean_attention_s", "mean_dwell_s")


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def the_mix(day: datetime) -> list[PersonEvent]:
    """Eight people on one UTC day, at two cameras of one device."""

    def at(hours: int, minutes: int) -> datetime:
        return day + timedelta(hours=hours, minutes=minutes)

    w2 = {"schema_version": 2, "watcher": True}
    passer = {"schema_version": 2, "watcher": False, "gender": None, "age": None}
    plan: list[tuple[str, datetime, float, dict[str, Any]]] = [
        # cam-1: two watchers, two passers-by (one glanced 0.5 s, too short to count as
        # watching), a 0.1 agent's
        ("cam-1", at(9, 10), 10.0, w2 | {"gender": "female", "age": 30.0, "attention_s": 4.0}),
        ("cam-1", at(9, 40), 6.0, w2 | {"gender": "male", "age": 50.0, "attention_s": 3.0}),
        ("cam-1", at(9, 20), 2.0, passer | {"attention_s": 0.0}),
        ("cam-1", at(10, 5), 4.0, passer | {"attention_s": 0.5}),
        ("cam-1", at(10, 30), 8.0, {"schema_version": 1, "gender": "female", "age": 20.0}),
        # cam-2: a watcher whose face gave no estimate, a passer-by, a 0.1 agent's at 11:00
        ("cam-2", at(10, 15), 5.0, w2 | {"gender": None, "age": None, "attention_s": 1.0}),
        ("cam-2", at(10, 45), 3.0, passer | {"attention_s": 0.0}),
        ("cam-2", at(11, 0), 12.0, {"schema_version": 1, "gender": "male", "age": 40.0}),
    ]
    return [
        make_event("dev-w", camera, last_seen=when, dwell_s=dwell, track_id=i, **kw)
        for i, (camera, when, dwell, kw) in enumerate(plan)
    ]


# By hand, from the_mix: passers-by count everyone and their dwell; watchers are schema 2
# watchers and every schema 1 event; attention is averaged over schema 2 watchers only (a
# passer-by's glance is not attention, a 0.1 agent's is unknown); gender and age count
# watchers (the three who never faced the camera are nowhere in them).
DAY = {
    "passers_by": 8,  # dwell 10 + 6 + 2 + 4 + 8 + 5 + 3 + 12 = 50
    "watchers": 5,  # two cam-1 watchers, the cam-2 watcher, the two schema 1 events
    "watcher_rate": 0.625,  # 5 / 8
    "mean_attention_s": 2.67,  # (4 + 3 + 1) / 3
    "mean_dwell_s": 6.25,  # 50 / 8
    "total": 8,
    "avg_dwell_s": 6.25,
    "avg_age": 35.0,  # (30 + 50 + 20 + 40) / 4
    "gender": {"female": 2, "male": 2, "unknown": 1},
    "age": {"18-24": 1, "25-34": 1, "35-44": 1, "45-54": 1, "unknown": 1},
    "direction": {"in": 0, "out": 0, "none": 8},
}
HOURS = {  # hour of the day: (passers-by, watchers, rate, mean attention, mean dwell)
    9: (3, 2, 0.6667, 3.5, 6.0),  # 10 + 6 + 2 = 18 / 3
    10: (4, 2, 0.5, 1.0, 5.0),  # the schema 1 one has no attention: 1.0 / 1; 20 / 4
    11: (1, 1, 1.0, None, 12.0),  # the 11:00 event only: no known attention
}
CAMERAS = {  # camera: (passers-by, watchers, rate, mean attention, mean dwell)
    "cam-1": (5, 3, 0.6, 3.5, 6.0),  # 30 / 5
    "cam-2": (3, 2, 0.6667, 1.0, 6.67),  # 20 / 3
}
# 09:30 to 11:30: raw events for the partial hours, the rollup for 10:00-11:00.
PARTIAL = (6, 4, 0.6667, 2.0, 6.33)  # 9:40, all of 10:xx, 11:00; (3 + 1) / 2; 38 / 6


def figures(counts: Any) -> tuple[Any, ...]:
    got = counts if isinstance(counts, dict) else counts.model_dump()
    return tuple(got[name] for name in NEW_FIGURES)


def check_day(counts: dict[str, Any]) -> None:
    assert {k: counts[k] for k in DAY if k != "age"} == {k: v for k, v in DAY.items() if k != "age"}
    assert {k: v for k, v in counts["age"].items() if v} == DAY["age"]


def test_the_figures_on_each_backend(storage: StorageDb, hub_factory: HubFactory) -> None:
    day = rollups.floor_day(datetime.now(UTC)) - timedelta(days=1)
    settings = settings_for(storage)
    run(prepare_database(storage.url, settings))
    assert store(storage, the_mix(day))

    async def totals(start: datetime, end: datetime, bucket: str) -> tuple[Any, Any]:
        pool = await open_pool(storage.url, 1)
        try:
            return await queries.stats(pool, start, end, bucket)  # type: ignore[arg-type]
        finally:
            await pool.close()

    # From raw events (nothing materialised), then from the rollups: the same figures.
    for _ in ("raw", "rollups"):
        total, buckets = run(totals(day, day + timedelta(days=1), "day"))
        check_day(total.model_dump())
        assert [figures(b) for b in buckets] == [figures(total)]
        maintain(storage, settings)

    hub = hub_factory.start(database_url=storage.url, rollup_refresh_s=3600)
    span = f"start={_iso(day)}&end={_iso(day + timedelta(days=1))}&device_id=dev-w"
    by_day = hub.get(f"/v1/stats?{span}&bucket=day")
    check_day(by_day["totals"])
    by_hour = hub.get(f"/v1/stats?{span}&bucket=hour")
    check_day(by_hour["totals"])
    hours = {datetime.fromisoformat(b["start"]).hour: figures(b) for b in by_hour["buckets"]}
    assert {h: f for h, f in hours.items() if f[0]} == HOURS
    assert hours[0] == (0, 0, None, None, None)  # nobody: rates and means are null

    partial = f"start={_iso(day + timedelta(hours=9, minutes=30))}"
    partial += f"&end={_iso(day + timedelta(hours=11, minutes=30))}"
    assert figures(hub.get(f"/v1/stats?{partial}&bucket=hour")["totals"]) == PARTIAL

    # Group by gender: the unknown group holds the passers-by, its gender split only the
    # one watcher whose face gave no estimate.
    groups = {
        g["key"]["gender"]: g
        for g in hub.get(f"/v1/stats?{span}&group_by=gender")["totals"]["groups"]
    }
    assert figures(groups["unknown"]) == (4, 1, 0.25, 1.0, 3.5)  # 2 + 4 + 5 + 3 = 14 / 4
    assert groups["unknown"]["gender"] == {"female": 0, "male": 0, "unknown": 1}
    assert figures(groups["female"]) == (2, 2, 1.0, 4.0, 9.0)  # the 0.1 agent's: unknown

    # The daily report: per camera, and each hour.
    report = hub.get(f"/v1/reports/daily?date={day.date().isoformat()}&device_id=dev-w")
    cameras = {c["camera_id"]: c for c in report["cameras"]}
    assert {name: figures(c["totals"]) for name, c in cameras.items()} == CAMERAS
    assert figures(cameras["cam-2"]["hours"][11]) == (1, 1, 1.0, None, 12.0)
    assert cameras["cam-1"]["totals"]["gender"] == {"female": 2, "male": 1, "unknown": 0}

    # The schema documents what the figures mean.
    counts = hub.get("/openapi.json")["components"]["schemas"]["Counts"]["properties"]
    assert "watchers" in counts["gender"]["description"]
    assert "passers_by" in counts["total"]["description"]


def test_events_and_exports_carry_watcher_and_attention(hub: RunningHub, db: Any) -> None:
    now = datetime.now(UTC)
    watcher = make_event("dev-wx", "cam-1", last_seen=now - timedelta(seconds=3), track_id=1,
                         dwell_s=6.0, attention_s=2.5)  # fmt: skip
    passer = make_event("dev-wx", "cam-1", last_seen=now - timedelta(seconds=2), track_id=2,
                        gender=None, age=None, watcher=False)  # fmt: skip
    old_agent = make_event("dev-wx", "cam-1", last_seen=now - timedelta(seconds=1), track_id=3,
                           schema_version=1)  # fmt: skip
    # What each agent sends: a 0.1 agent's payload has no watcher and no attention at all.
    old_payload = old_agent.model_dump_json(exclude={"watcher", "attention_s"}).encode()
    assert b"watcher" not in old_payload and b'"schema_version":1' in old_payload
    publish_messages(
        [(event_topic(hub.topic_root, e), e.model_dump_json().encode()) for e in (watcher, passer)]
        + [(event_topic(hub.topic_root, old_agent), old_payload)]
    )
    wait_until(lambda: len(hub.get("/v1/events?device_id=dev-wx")["events"]) == 3, what="stored")

    # Stored: the schema 1 event through the broker is a watcher of unknown attention.
    rows = db(
        "SELECT track_id, watcher, attention_s FROM person_events WHERE device_id = 'dev-wx'"
        " ORDER BY track_id"
    )
    assert [tuple(r) for r in rows] == [(1, True, 2.5), (2, False, 0.0), (3, True, None)]
    assert not db("SELECT 1 FROM rejected_messages WHERE topic LIKE $1", f"{hub.topic_root}/%")

    expected = [(True, 2.5), (False, 0.0), (True, None)]
    page = hub.get("/v1/events?device_id=dev-wx")["events"]
    assert [(e["watcher"], e["attention_s"]) for e in page] == expected

    headers = {"X-API-Key": hub.api_key}
    url = f"{hub.base_url}/v1/export/events"
    as_json = httpx.get(url, params={"device_id": "dev-wx", "format": "json"}, headers=headers)
    assert [(r["watcher"], r["attention_s"]) for r in as_json.json()] == expected
    ndjson = httpx.get(url, params={"device_id": "dev-wx", "format": "ndjson"}, headers=headers)
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert [(r["watcher"], r["attention_s"]) for r in lines] == expected
    as_csv = httpx.get(url, params={"device_id": "dev-wx", "format": "csv"}, headers=headers)
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert list(table[0])[15:18] == ["crops", "watcher", "attention_s"]
    assert [(r["watcher"], r["attention_s"]) for r in table] == [
        ("True", "2.5"), ("False", "0.0"), ("True", "")
    ]  # fmt: skip

    totals = hub.get("/v1/stats?device_id=dev-wx")["totals"]
    assert figures(totals) == (3, 2, 0.6667, 2.5, 4.67)  # attention: the schema 2 watcher's
    assert totals["gender"] == {"female": 2, "male": 0, "unknown": 0}


# --- upgrading a hub that holds data: migration 010 -----------------------------------------

_OLD_INSERT = """INSERT INTO person_events (event_id, device_id, camera_id, track_id, first_seen,
       last_seen, dwell_s, gender, age, direction, crops, return_of)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[],
       $6::timestamptz[], $7::real[], $8::text[], $9::real[], $10::text[], $11::integer[],
       $12::uuid[])"""


async def _deployed_hub(
    conn: asyncpg.Connection, s: HubSettings, events: list[PersonEvent]
) -> None:
    """A hub at migration 009 that stored schema 1 events, materialised them, and whose
    retention then dropped the oldest raw rows."""
    await migrate(conn, s, up_to=9)
    await configure_storage(conn, s)
    await conn.execute(
        _OLD_INSERT,
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
    if await conn.fetchval("SELECT to_regclass('rollup_watermarks') IS NULL"):
        await rollups.maintain(conn, s)  # TimescaleDB: the round works on the old aggregates
        return
    await old_plain_round(conn, s.rollup_lag_s)
    await conn.execute(
        "SELECT hub_drop_partitions(now() - $1::interval)", timedelta(days=s.retention_days)
    )


def test_upgrade_keeps_what_retention_dropped(storage: StorageDb) -> None:
    """Migration 010 on a database whose oldest day exists only in the rollups: on
    TimescaleDB the aggregates are recreated, so that day goes to an archive and back."""
    settings = settings_for(
        storage, chunk_interval_days=1, compress_after_days=1, retention_days=10, rollup_late_days=5
    )
    now = datetime.now(UTC)
    old_day = rollups.floor_day(now - timedelta(days=20))
    schema_1 = {"schema_version": 1, "watcher": None, "attention_s": None}
    old = [
        make_event("dev-a", "cam-1", last_seen=old_day + timedelta(hours=h, minutes=5),
                   track_id=h, gender=("female", "male", None)[h % 3], schema_version=1)
        for h in range(0, 24, 3)
    ]  # fmt: skip
    recent = [e.model_copy(update=schema_1) for e in dataset(now, 150, seed=4)]
    run(ensure_database(storage.url))
    run(with_conn(storage, lambda conn: _deployed_hub(conn, settings, old + recent)))

    async def raw_count(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM person_events"))

    assert run(with_conn(storage, raw_count)) == len(recent)  # the old day: rollups only
    assert run(prepare_database(storage.url, settings)) == [
        f"010_watchers.{storage.backend}.sql",
        "011_share_inputs.sql",
    ] + (["012_fleet_aggregates.timescaledb.sql"] if storage.backend == "timescaledb" else [])

    async def archived(conn: asyncpg.Connection) -> list[int]:
        return [
            int(await conn.fetchval(f"SELECT count(*) FROM {view}_archive"))
            for view in ("stats_hourly", "stats_daily")
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{view}_archive")
        ]

    kept = run(with_conn(storage, archived))
    assert kept == ([8, 1] if storage.backend == "timescaledb" else [])  # 8 hours, 1 day
    maintain(storage, settings)  # refreshes the new aggregates, then restores the archive
    assert run(with_conn(storage, archived)) == []

    # Every figure as before the upgrade: stored events were all watchers.
    day = (old_day, old_day + timedelta(days=1))
    for bucket in ("day", "hour"):
        assert_same(answer(storage, *day, bucket), reference(old, *day, bucket))
    span = (now - timedelta(days=3), now)
    assert_same(answer(storage, *span, "hour"), reference(recent, *span, "hour"))
    assert_same(answer(storage, *span, "day"), reference(recent, *span, "day"))

    # New events of both schemas join them.
    fresh = dataset(now, 100, seed=9)
    assert store(storage, fresh) == {e.event_id for e in fresh}
    maintain(storage, settings)
    assert_same(answer(storage, *span, "hour"), reference(recent + fresh, *span, "hour"))
    assert_same(answer(storage, *day, "day"), reference(old, *day, "day"))


def test_rows_moved_out_of_the_default_partition_keep_watcher(plain_storage: StorageDb) -> None:
    """Plain backend: an event older than every partition waits in the default one until a
    partition for its window is made; moving it there keeps watcher and attention."""
    settings = settings_for(plain_storage)
    run(prepare_database(plain_storage.url, settings))
    when = datetime.now(UTC) - timedelta(days=60)
    passer = make_event("dev-p", last_seen=when, gender=None, age=None, watcher=False,
                        attention_s=0.25)  # fmt: skip
    watcher = make_event("dev-p", last_seen=when, track_id=2, attention_s=1.5)
    store(plain_storage, [passer, watcher])

    async def move(conn: asyncpg.Connection) -> list[tuple[str, bool, float]]:
        assert await conn.fetchval("SELECT count(*) FROM person_events_default") == 2
        await conn.execute("SELECT hub_ensure_partitions($1, $1)", when)
        assert await conn.fetchval("SELECT count(*) FROM person_events_default") == 0
        rows = await conn.fetch(
            "SELECT tableoid::regclass::text, watcher, attention_s FROM person_events"
            " ORDER BY track_id"
        )
        return [tuple(r) for r in rows]

    moved = run(with_conn(plain_storage, move))
    assert [(w, a) for _, w, a in moved] == [(False, 0.25), (True, 1.5)]
    assert all(table.startswith("person_events_2") for table, _, _ in moved)
