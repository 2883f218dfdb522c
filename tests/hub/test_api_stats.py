"""The statistics API beyond counts, through a running hub on each backend: minute to
month buckets, filters, group-by (site, device, camera, gender, age band, direction),
first visits against returns, average age and dwell, the daily report, occupancy over
time and the event filters. Every answer is checked against an aggregation of the
events done here, and both backends must answer byte for byte the same."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from cloud_hub import queries
from cloud_hub.received import TelemetryBatch
from cloud_hub.settings import HubSettings
from cloud_hub.storage import rollups
from cloud_hub.storage.db import open_pool, prepare_database
from cloud_hub.storage.device_writes import store_telemetry
from edge_agent.contract import Occupancy, PersonEvent
from tests.conftest import HubFactory, RunningHub
from tests.hub.conftest import StorageDb
from tests.hub.test_storage import (
    SITES,
    Measures,
    dataset,
    reference,
    register_cameras,
    run,
    store,
)

Expected = dict[str, Any]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def counts(ref: dict[Any, Measures]) -> Expected:
    """What a Counts object must say for these reference rows: gender and age bands count
    watchers, directions everyone."""
    out: Expected = {
        "total": 0,
        "watchers": 0,
        "visitors": 0,
        "gender": dict.fromkeys(("female", "male", "unknown"), 0),
        "direction": dict.fromkeys(("in", "out", "none"), 0),
        "age": defaultdict(int),
    }
    age_n, attention_n, age_sum, dwell, attention = 0, 0, 0.0, 0.0, 0.0
    for (_, gender, band, direction), measures in ref.items():
        events, visitors, n, watchers, n_attention, ages, dwells, attentions = measures
        out["total"] += events
        out["watchers"] += watchers
        out["visitors"] += visitors
        out["gender"][gender] += watchers
        out["direction"][direction] += events
        if watchers:
            out["age"][band] += watchers
        age_n, age_sum, dwell = age_n + n, age_sum + ages, dwell + dwells
        attention_n, attention = attention_n + n_attention, attention + attentions
    out["passers_by"] = out["total"]
    out["returns"] = out["total"] - out["visitors"]
    out["avg_age"] = age_sum / age_n if age_n else None
    out["avg_dwell_s"] = out["mean_dwell_s"] = dwell / out["total"] if out["total"] else None
    out["watcher_rate"] = out["watchers"] / out["total"] if out["total"] else None
    out["mean_attention_s"] = attention / attention_n if attention_n else None
    return out


def assert_counts(got: dict[str, Any], want: Expected) -> None:
    for name in ("total", "passers_by", "watchers", "visitors", "returns", "gender", "direction"):
        assert got[name] == want[name], name
    assert {k: v for k, v in got["age"].items() if v} == dict(want["age"])
    for name in ("avg_age", "avg_dwell_s", "mean_dwell_s", "mean_attention_s", "watcher_rate"):
        if want[name] is None:
            assert got[name] is None
        else:
            assert got[name] == pytest.approx(want[name], abs=0.0051), name


def prepare(db: StorageDb, events: Sequence[PersonEvent], now: datetime) -> None:
    """Migrate, register cameras, store events and occupancy, materialise once."""
    settings = HubSettings(database_url=db.url)
    run(prepare_database(db.url, settings))
    register_cameras(db)
    store(db, events)
    samples = [
        Occupancy(device_id=d, camera_id=c, at=now - timedelta(minutes=m, seconds=s), people=p)
        for (d, c), p0 in zip(SITES, (1, 2, 3), strict=True)
        for m in range(0, 130, 7)
        for s, p in ((0, p0), (20, p0 + m % 3))
    ]

    async def write_occupancy() -> None:
        pool = await open_pool(db.url, 1)
        try:
            await store_telemetry(pool, TelemetryBatch(occupancy=samples))
            async with pool.acquire() as conn:
                await rollups.maintain(conn, settings)
        finally:
            await pool.close()

    run(write_occupancy())


def requests(now: datetime) -> list[str]:
    """The API calls both backends must answer the same."""
    day = rollups.floor_day(now)

    def q(path: str, **params: Any) -> str:
        pairs = [(k, x) for k, v in params.items() for x in (v if isinstance(v, list) else [v])]
        return f"{path}?{urlencode(pairs)}"

    long = {"start": _iso(now - timedelta(days=3)), "end": _iso(now)}
    return [
        q("/v1/stats", **long, bucket="day", group_by=["site", "gender"]),
        q("/v1/stats", **long, bucket="hour", group_by=["camera"], direction="in"),
        q("/v1/stats", **long, bucket="week", group_by=["age_band", "direction"]),
        q("/v1/stats", **long, bucket="month", site="lobby", gender="female"),
        q("/v1/stats", start=_iso(now - timedelta(hours=2)), end=_iso(now), bucket="minute"),
        q("/v1/stats", **long, bucket="day", group_by=["device"], age_band="25-34"),
        q("/v1/reports/daily", date=(day - timedelta(days=1)).date().isoformat()),
        q("/v1/reports/daily", date=day.date().isoformat(), site="lobby"),
        q("/v1/occupancy", start=_iso(now - timedelta(hours=3)), end=_iso(now), bucket="hour"),
        q(
            "/v1/occupancy",
            start=_iso(now - timedelta(hours=3)),
            end=_iso(now),
            bucket="minute",
            group_by=["site"],
        ),
        q("/v1/events", **long, site="street", returning="true", limit=1000),
        q("/v1/events", **long, gender="unknown", direction="none", age_band="unknown", limit=1000),
    ]


def check_against_events(
    hub: RunningHub, events: list[PersonEvent], now: datetime, answers: dict[str, Any]
) -> None:
    start, end = now - timedelta(days=3), now
    by_site_gender, by_camera, by_band = (answers[r] for r in requests(now)[:3])

    # Totals and each day, per site and gender: the groups add up to the totals.
    assert_counts(by_site_gender["totals"], counts(reference(events, start, end, "day")))
    for group in by_site_gender["totals"]["groups"]:
        site, gender = group["key"]["site"], group["key"]["gender"]
        mine = [
            e
            for e in events
            if SITES.get((e.device_id, e.camera_id)) == site
            and (e.gender.value.value if e.gender else "unknown") == gender
        ]
        assert_counts(group, counts(reference(mine, start, end, "day")))
    for bucket in by_site_gender["buckets"]:
        label = datetime.fromisoformat(bucket["start"])
        step_end = min(end, label + timedelta(days=1))
        assert_counts(bucket, counts(reference(events, max(start, label), step_end, "day")))
        assert sum(g["total"] for g in bucket["groups"]) == bucket["total"]
    assert {g["key"]["site"] for g in by_site_gender["totals"]["groups"]} == {
        "lobby",
        "street",
        None,  # dev-b/cam-2 is not registered
    }

    # Per camera, only people who crossed inwards, by hour.
    inward = [e for e in events if e.direction and e.direction.value == "in"]
    for group in by_camera["totals"]["groups"]:
        key = (group["key"]["device_id"], group["key"]["camera_id"])
        ref = reference(inward, start, end, "hour", *key)
        assert_counts(group, counts(ref))
    assert by_camera["totals"]["direction"] == {"in": len(
        [e for e in inward if start <= e.last_seen < end]
    ), "out": 0, "none": 0}  # fmt: skip

    # Weeks start on Monday; age band and direction groups.
    for bucket in by_band["buckets"]:
        assert datetime.fromisoformat(bucket["start"]).weekday() == 0
    assert_counts(by_band["totals"], counts(reference(events, start, end, "week")))

    # The daily report: per camera, totals and 24 hours that add up to them.
    yesterday = rollups.floor_day(now) - timedelta(days=1)
    report = answers[requests(now)[6]]
    assert len(report["cameras"]) == 4
    for camera in report["cameras"]:
        key = (camera["device_id"], camera["camera_id"])
        ref = reference(events, yesterday, yesterday + timedelta(days=1), "hour", *key)
        assert_counts(camera["totals"], counts(ref))
        assert [h["hour"] for h in camera["hours"]] == list(range(24))
        assert sum(h["total"] for h in camera["hours"]) == camera["totals"]["total"]
        assert camera["site"] == SITES.get(key)
    today = answers[requests(now)[7]]
    assert {c["site"] for c in today["cameras"]} == {"lobby"}

    # Occupancy: three cameras, each minute's samples averaged, then summed.
    occupancy = answers[requests(now)[8]]["buckets"]
    assert occupancy and all(b["key"] is None for b in occupancy)
    assert max(b["people_max"] for b in occupancy) <= 1 + 2 + 3 + 3 * 2
    by_site = answers[requests(now)[9]]["buckets"]
    assert {b["key"]["site"] for b in by_site} == {"lobby", "street"}

    # Event filters.
    street_returns = answers[requests(now)[10]]["events"]
    assert {e["event_id"] for e in street_returns} == {
        str(e.event_id)
        for e in events
        if SITES.get((e.device_id, e.camera_id)) == "street"
        and e.return_of is not None
        and start <= e.last_seen < end
    }
    unknowns = answers[requests(now)[11]]["events"]
    assert unknowns and all(
        e["gender"] is None and e["direction"] is None and e["age"] is None for e in unknowns
    )


def test_api_answers_the_same_on_both_backends(
    plain_storage: StorageDb, timescale_storage: StorageDb, hub_factory: HubFactory
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    events = dataset(now, 500, seed=5)
    answers: list[dict[str, Any]] = []
    for db in (plain_storage, timescale_storage):
        prepare(db, events, now)
        hub = hub_factory.start(database_url=db.url, rollup_refresh_s=3600)
        answers.append({path: hub.get(path) for path in requests(now)})
        check_against_events(hub, events, now, answers[-1])
        hub.stop()
    plain, timescale = answers
    for path in requests(now):
        if path.startswith("/v1/events"):  # received_at: when each database stored it
            for page in (plain[path], timescale[path]):
                for event in page["events"]:
                    del event["received_at"]
        assert plain[path] == timescale[path], path


def test_buckets_and_ranges(storage: StorageDb) -> None:
    """Calendar buckets, limits and the plain backend's direct reads around watermarks."""
    start = datetime(2026, 1, 30, 13, 30, tzinfo=UTC)
    assert queries.bucket_starts(start, datetime(2026, 4, 1, tzinfo=UTC), "month") == [
        datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3)
    ]
    weeks = queries.bucket_starts(start, datetime(2026, 2, 10, tzinfo=UTC), "week")
    assert weeks == [datetime(2026, 1, 26, tzinfo=UTC) + timedelta(days=7 * i) for i in range(3)]
    with pytest.raises(ValueError, match="exceed"):
        queries.bucket_starts(start, start + timedelta(days=8), "minute")
    with pytest.raises(ValueError):
        queries.check_range(datetime(1960, 1, 1, tzinfo=UTC), start)

    settings = HubSettings(database_url=storage.url)
    run(prepare_database(storage.url, settings))
    now = datetime.now(UTC)
    events = dataset(now, 300, seed=3)
    store(storage, events)

    async def answers() -> list[list[queries.StatsRow]]:
        pool = await open_pool(storage.url, 1)
        try:
            out = []
            async with pool.acquire() as conn:
                await rollups.maintain(conn, settings)
            for bucket in ("week", "month", "day"):
                out.append(
                    await queries.stats_rows(pool, now - timedelta(days=3), now, bucket)  # type: ignore[arg-type]
                )
            out.append(
                await queries.stats_rows(
                    pool, now - timedelta(days=3), now, "day", per_camera=True, per_site=True
                )
            )
            return out
        finally:
            await pool.close()

    week, month, day, per_camera = run(answers())
    for rows, bucket in ((week, "week"), (month, "month"), (day, "day")):
        got = {
            (r.bucket, r.gender, r.age_band, r.direction): (r.events, r.visitors, r.age_n)
            for r in rows
        }
        want = reference(events, now - timedelta(days=3), now, bucket)
        assert got == {k: v[:3] for k, v in want.items()}
    assert sum(r.events for r in per_camera) == sum(r.events for r in day)
    assert {(r.device_id, r.camera_id) for r in per_camera} == {
        (e.device_id, e.camera_id) for e in events
    }
    assert all(r.site is None for r in per_camera)  # nothing registered here


def test_daily_report_of_an_empty_day(storage: StorageDb) -> None:
    run(prepare_database(storage.url, HubSettings(database_url=storage.url)))
    register_cameras(storage)

    async def report() -> list[Any]:
        pool = await open_pool(storage.url, 1)
        try:
            return await queries.daily_stats(pool, date(2020, 2, 29), site="lobby")
        finally:
            await pool.close()

    cameras = run(report())
    assert [(c.device_id, c.camera_id) for c in cameras] == [("dev-a", "cam-1"), ("dev-b", "cam-1")]
    assert all(c.totals.total == 0 and len(c.hours) == 24 for c in cameras)
