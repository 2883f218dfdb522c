"""Hostile time and identity, end to end through the broker into a running hub, on both
storage backends: one event_id is one row, any parsable timestamp is either stored or
dead-lettered, old clocks never reach the statistics, and the upkeep keeps running.

The expected outcome of every message is worked out here from the datetimes themselves
(plain comparisons with the contract's published bounds), never by the hub's code.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_hub.settings import HubSettings
from cloud_hub.storage.db import ensure_database, migrate, prepare_database
from tests.conftest import RunningHub, event_topic, make_event, publish_messages
from tests.edge.broker_tools import clear_retained, publish_retained
from tests.hub.conftest import StorageDb
from tests.hub.old_hub import old_plain_round

# The bounds as docs/mqtt-contract.md states them (not imported from the code under test).
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
SKEW = timedelta(minutes=10)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def _raw(event_id: uuid.UUID, device: str, first: str, last: str, dwell: float = 1.0) -> bytes:
    """An event's JSON with the times given as text, exactly as a device would send them."""
    data = json.loads(make_event(device, "cam-1").model_dump_json())
    data.update(event_id=str(event_id), first_seen=first, last_seen=last, dwell_s=dwell)
    data.update(attention_s=dwell / 2)  # schema 2: attention within the dwell
    return json.dumps(data).encode()


def _outcome(url: str, event_id: uuid.UUID) -> tuple[int, list[str]]:
    """(rows stored for the id, reasons of dead letters that carry it)."""
    rows = _fetch(url, "SELECT count(*) FROM person_events WHERE event_id = $1", event_id)
    reasons = _fetch(
        url,
        """SELECT reason FROM rejected_messages
           WHERE position(convert_to($1, 'UTF8') IN payload) > 0""",
        str(event_id),
    )
    return int(rows[0][0]), [r["reason"] for r in reasons]


def _tally(hub: RunningHub) -> dict[str, float]:
    """What the hub has counted: events stored, duplicates, and rejections by reason."""
    counts = {
        "stored": hub.metric("hub_events_stored_total"),
        "duplicate": hub.metric("hub_events_duplicate_total"),
    }
    for reason in ("schema", "bad_time", "bad_json", "db_rejected", "hub_error"):
        counts[reason] = hub.metric("hub_messages_rejected_total", reason=reason)
    return counts


def _timed_get(hub: RunningHub, path: str) -> tuple[int, float]:
    started = time.monotonic()
    status, _ = hub.request(path)
    return status, time.monotonic() - started


# --- 2. one event_id, one row ---------------------------------------------------------


def test_one_event_id_is_one_row_across_times_devices_and_partitions(
    storage: StorageDb, hub_factory: Any, wait_until: Callable[..., Any]
) -> None:
    hub = hub_factory.start(database_url=storage.url, rollup_refresh_s=1.0)
    now = datetime.now(UTC).replace(microsecond=0)
    the_id = uuid.uuid4()
    first_last = now - timedelta(hours=1)
    # The same id five times: as sent, redelivered, another last_seen in the same chunk,
    # another device, and four months back (another chunk / partition, 7-day chunks).
    sends = [
        ("dev-a", first_last),
        ("dev-a", first_last),
        ("dev-a", first_last - timedelta(hours=1)),
        ("dev-b", first_last + timedelta(minutes=5)),
        ("dev-a", now - timedelta(days=120)),
    ]
    messages = [
        (
            f"{hub.topic_root}/v1/{device}/events/cam-1",
            _raw(the_id, device, _iso(last - timedelta(seconds=1)), _iso(last)),
        )
        for device, last in sends
    ]
    publish_messages(messages[:1])
    wait_until(lambda: hub.metric("hub_events_stored_total") == 1, what="the first copy stored")
    publish_messages(messages[1:])  # the rest together: one batch carries the id 4 times
    wait_until(lambda: hub.metric("hub_events_duplicate_total") == 4, what="4 duplicates")
    # Counters count rows: 1 stored, 4 duplicates, nothing rejected.
    assert _tally(hub) == {
        "stored": 1,
        "duplicate": 4,
        "schema": 0,
        "bad_time": 0,
        "bad_json": 0,
        "db_rejected": 0,
        "hub_error": 0,
    }

    start, end = _iso(now - timedelta(days=200)), _iso(now + timedelta(minutes=1))
    page = hub.get(f"/v1/events?start={start}&end={end}&limit=100")
    assert [e["event_id"] for e in page["events"]] == [str(the_id)]
    assert page["events"][0]["device_id"] == "dev-a"
    for bucket in ("hour", "day"):
        stats = hub.get(f"/v1/stats?start={start}&end={end}&bucket={bucket}")
        assert stats["totals"]["total"] == 1, bucket
    devices = {d["device_id"]: d for d in hub.get("/v1/devices")}
    assert devices["dev-a"]["events"] == 1 and "dev-b" not in devices

    hub.stop()  # read the tables once the hub is gone
    rows = _fetch(
        storage.url, "SELECT device_id, last_seen FROM person_events WHERE event_id = $1", the_id
    )
    assert [(r["device_id"], r["last_seen"]) for r in rows] == [("dev-a", first_last)]
    assert _fetch(storage.url, "SELECT count(*) FROM person_events")[0][0] == 1


def test_migration_keeps_one_row_per_event_id(storage: StorageDb) -> None:
    """A database that stored an id twice (before migration 008) keeps the first."""
    settings = HubSettings(database_url=storage.url)
    now = datetime.now(UTC).replace(microsecond=0)
    the_id = uuid.uuid4()

    async def old_hub() -> None:
        await ensure_database(storage.url)
        conn = await asyncpg.connect(storage.url)
        try:
            await migrate(conn, settings, up_to=7)
            for days, received in ((1, now - timedelta(hours=2)), (90, now)):
                last = now - timedelta(days=days)
                await conn.execute(
                    """INSERT INTO person_events (event_id, device_id, camera_id, track_id,
                           first_seen, last_seen, dwell_s, crops, received_at)
                       VALUES ($1, 'dev-m', 'cam-1', 1, $2, $2, 0, 1, $3)""",
                    the_id,
                    last,
                    received,
                )
        finally:
            await conn.close()

    asyncio.run(old_hub())
    applied = asyncio.run(prepare_database(storage.url, settings))
    assert f"008_event_ids.{storage.backend}.sql" in applied
    rows = _fetch(storage.url, "SELECT last_seen FROM person_events WHERE event_id = $1", the_id)
    assert [r["last_seen"] for r in rows] == [now - timedelta(days=1)]  # received first
    claims = _fetch(storage.url, "SELECT last_seen FROM event_ids WHERE event_id = $1", the_id)
    assert [r["last_seen"] for r in claims] == [now - timedelta(days=1)]


# --- 3. clocks that were never set ----------------------------------------------------


def test_unset_clock_events_are_dead_lettered_and_stats_stay_fast(
    storage: StorageDb, hub_factory: Any, wait_until: Callable[..., Any]
) -> None:
    # A long batch window, so the good event and the 1970 ones share one batch.
    hub = hub_factory.start(database_url=storage.url, rollup_refresh_s=1.0, batch_max_wait_s=1.0)
    now = datetime.now(UTC).replace(microsecond=0)
    good, boot, older = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    topic = f"{hub.topic_root}/v1/dev-rtc/events/cam-1"
    publish_messages(
        [
            (topic, _raw(boot, "dev-rtc", "1970-01-01T00:00:12Z", "1970-01-01T00:00:15Z")),
            (topic, _raw(good, "dev-rtc", _iso(now - timedelta(seconds=3)), _iso(now))),
            (topic, _raw(older, "dev-rtc", "1900-01-01T00:00:00Z", "1900-01-01T00:00:01Z")),
        ]
    )
    wait_until(lambda: _tally(hub)["bad_time"] == 2, what="the 1970 and 1900 events refused")
    wait_until(lambda: _tally(hub)["stored"] == 1, what="the good event stored")
    devices = {d["device_id"]: d for d in hub.get("/v1/devices")}
    assert datetime.fromisoformat(devices["dev-rtc"]["first_seen"]) == now
    assert devices["dev-rtc"]["events"] == 1

    rounds = hub.metric("hub_rollup_rounds_total")
    wait_until(lambda: hub.metric("hub_rollup_rounds_total") >= rounds + 2, what="2 rounds")
    start = _iso(now - timedelta(days=30))
    for path in (
        f"/v1/stats?start={start}&end={_iso(now + timedelta(minutes=1))}",
        f"/v1/stats?start=2000-01-01T00:00:00Z&end={_iso(now)}&bucket=day",
        "/v1/reports/daily",
    ):
        status, seconds = _timed_get(hub, path)
        assert status == 200 and seconds < 3, (path, status, seconds)
    stats = hub.get(f"/v1/stats?start={start}&end={_iso(now + timedelta(minutes=1))}")
    assert stats["totals"]["total"] == 1
    assert hub.metric("hub_background_task_failures_total", task="rollups") == 0

    hub.stop()
    assert _outcome(storage.url, good) == (1, [])
    assert _outcome(storage.url, boot) == (0, ["bad_time"])
    assert _outcome(storage.url, older) == (0, ["bad_time"])


# --- 1. any time the contract can parse ------------------------------------------------

_ZONES = st.one_of(
    st.just(UTC),
    st.integers(min_value=-14 * 60, max_value=14 * 60).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    ),
)
_MOMENTS = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    # Near now, where the skew bound lies, and leap days.
    st.integers(min_value=-3 * 86400, max_value=3 * 86400).map(
        lambda s: datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=s)
    ),
    st.sampled_from([datetime(2024, 2, 29, 23, 59, 59, 999999), datetime(2000, 2, 29, 12)]),
    st.sampled_from([datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)]),
)


def _utc_or_none(moment: datetime) -> datetime | None:
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is in year 0 in UTC
        return None


def _expected(first: datetime, last: datetime) -> str:
    """'stored' or the dead letter's reason, from the times alone."""
    a, b = _utc_or_none(first), _utc_or_none(last)
    if a is None or b is None:
        return "schema"  # not a time in years 1-9999 once in UTC
    if b < a:
        return "schema"  # last_seen before first_seen
    if a < EARLIEST or b < EARLIEST or b > datetime.now(UTC) + SKEW:
        return "bad_time"
    return "stored"


@pytest.mark.parametrize("backend", ["plain", "timescaledb"])
def test_any_parsable_time_is_stored_or_dead_lettered(
    backend: str,
    request: pytest.FixtureRequest,
    hub_factory: Any,
    wait_until: Callable[..., Any],
) -> None:
    from tests.hub.conftest import fresh_storage

    storages = fresh_storage(backend, request)
    storage = next(storages)
    hub = hub_factory.start(database_url=storage.url, rollup_refresh_s=1.0)
    outcomes: dict[str, int] = {}
    verdicts: list[tuple[uuid.UUID, str]] = []

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        pairs=st.lists(
            st.tuples(_MOMENTS, _MOMENTS, _ZONES, _ZONES, st.booleans()), min_size=1, max_size=4
        )
    )
    def send(pairs: list[tuple[datetime, datetime, timezone, timezone, bool]]) -> None:
        sent = []
        for first_naive, last_naive, zone_a, zone_b, ordered in pairs:
            first, last = first_naive.replace(tzinfo=zone_a), last_naive.replace(tzinfo=zone_b)
            if ordered:  # mostly well-formed spans: first a few seconds before last
                try:
                    first = last - timedelta(seconds=3)
                except OverflowError:
                    first = last
            event_id = uuid.uuid4()
            payload = _raw(event_id, "dev-time", first.isoformat(), last.isoformat())
            sent.append((event_id, _expected(first, last), payload))
        before = _tally(hub)
        publish_messages([(f"{hub.topic_root}/v1/dev-time/events/cam-1", p) for *_, p in sent])
        expected = dict(before)
        for event_id, outcome, _ in sent:
            expected[outcome] += 1
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            verdicts.append((event_id, outcome))
        counted: dict[str, float] = {}

        def settled() -> bool:
            counted.update(_tally(hub))
            return sum(counted.values()) >= sum(expected.values())

        wait_until(settled, what=f"{len(sent)} messages stored or dead-lettered")
        assert counted == expected, sent

    try:
        send()
        # Every kind of outcome was exercised.
        assert {"stored", "bad_time", "schema"} <= set(outcomes), outcomes
        rounds = hub.metric("hub_rollup_rounds_total")
        wait_until(lambda: hub.metric("hub_rollup_rounds_total") >= rounds + 2, what="2 rounds")
        now = datetime.now(UTC)
        for path in (
            f"/v1/stats?start={_iso(now - timedelta(days=7))}&end={_iso(now)}",
            f"/v1/stats?start={_iso(now - timedelta(days=90))}&end={_iso(now)}&bucket=day",
            "/v1/reports/daily",
            f"/v1/events?start={_iso(now - timedelta(days=7))}&end={_iso(now)}",
        ):
            status, seconds = _timed_get(hub, path)
            assert status == 200 and seconds < 5, (path, status, seconds)
        assert hub.metric("hub_background_task_failures_total", task="rollups") == 0
        assert hub.metric("hub_background_task_failures_total", task="ingest") == 0
        health = hub.get("/healthz")
        assert health["rollups"] == "ok" and health["rollup_rounds"] >= rounds + 2
        assert hub.process.poll() is None
        hub.stop()
        # Each message by its id: a row when it was to be stored, else one dead letter.
        for event_id, outcome in verdicts:
            assert _outcome(storage.url, event_id) == (
                (1, []) if outcome == "stored" else (0, [outcome])
            )
    finally:
        hub.stop()
        for _ in storages:
            pass


def test_rows_stored_before_times_were_bounded_do_not_stop_the_upkeep(
    storage: StorageDb, hub_factory: Any, wait_until: Callable[..., Any]
) -> None:
    """The defect's state: -infinity (plain; a hypertable cannot hold it) and 1970 rows
    already stored by an older hub and rolled up. The upgrade dead-letters them, their
    buckets leave the statistics, and the upkeep and stats carry on."""
    url = storage.url
    settings_ = HubSettings(database_url=url)
    old_times = ["1970-01-01T00:00:01Z", "1900-06-01T00:00:00Z"]
    if storage.backend == "plain":
        old_times.append("-infinity")

    async def old_hub() -> None:
        await ensure_database(url)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, settings_, up_to=7)
            for last in old_times:
                await conn.execute(
                    """INSERT INTO person_events (event_id, device_id, camera_id, track_id,
                           first_seen, last_seen, dwell_s, crops)
                       VALUES ($1, 'dev-old', 'cam-1', 1, $2::text::timestamptz,
                               $2::text::timestamptz, 0, 1)""",
                    uuid.uuid4(),
                    last,
                )
            await conn.execute(
                """INSERT INTO devices (device_id, first_seen, last_seen, events)
                   VALUES ('dev-old', '1900-06-01', now(), $1)""",
                len(old_times),
            )
            # The old hub rolled them up: their buckets are materialised.
            if storage.backend == "plain":
                await old_plain_round(conn)
            else:
                for view in ("stats_hourly", "stats_daily"):
                    await conn.execute("CALL refresh_continuous_aggregate($1, NULL, NULL)", view)
            old_stats = await conn.fetchval(
                "SELECT sum(events) FROM stats_daily WHERE bucket < '1971-01-01'"
            )
            assert old_stats == len(old_times)  # counted, as the defect had it
        finally:
            await conn.close()

    asyncio.run(old_hub())
    hub = hub_factory.start(database_url=url, rollup_refresh_s=1.0)
    rounds = hub.metric("hub_rollup_rounds_total")
    wait_until(lambda: hub.metric("hub_rollup_rounds_total") >= rounds + 2, what="2 rounds")
    now = datetime.now(UTC)
    for path in (
        "/v1/stats?start=1970-01-01T00:00:00Z&end=1971-06-01T00:00:00Z&bucket=day",
        f"/v1/stats?start=2001-01-01T00:00:00Z&end={_iso(now)}&bucket=day",
    ):
        status, seconds = _timed_get(hub, path)
        assert status == 200 and seconds < 3, (path, status, seconds)
        assert hub.get(path)["totals"]["total"] == 0, path
    assert hub.metric("hub_background_task_failures_total", task="rollups") == 0
    event = make_event("dev-old", "cam-1")
    publish_messages([(event_topic(hub.topic_root, event), event.model_dump_json().encode())])
    wait_until(lambda: hub.metric("hub_events_stored_total") == 1, what="ingest goes on")
    hub.stop()
    assert _fetch(url, "SELECT count(*) FROM person_events")[0][0] == 1
    letters = _fetch(url, "SELECT reason FROM rejected_messages")
    assert [r["reason"] for r in letters] == ["bad_time"] * len(old_times)
    first_seen = _fetch(url, "SELECT first_seen FROM devices WHERE device_id = 'dev-old'")
    assert first_seen[0][0] >= EARLIEST


# --- smaller defects ---------------------------------------------------------------------


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_the_broker_keeps_oversized_messages_from_the_hub(
    hub: RunningHub, wait_until: Callable[..., Any]
) -> None:
    """The hub asks for a Maximum Packet Size: 2 MB payloads never reach its memory (the
    broker drops them for it), and ingest goes on."""
    before = _peak_rss_kb(hub.process.pid)
    topic = f"{hub.topic_root}/v1/dev-big/events/cam-1"
    publish_messages([(topic, b"{" + b" " * 2_000_000 + b"}") for _ in range(5)])
    event = make_event("dev-big", "cam-1")
    publish_messages([(event_topic(hub.topic_root, event), event.model_dump_json().encode())])
    wait_until(lambda: hub.metric("hub_events_stored_total") == 1, what="the event after")
    assert hub.metric("hub_messages_rejected_total", reason="too_large") == 0
    grown_mb = (_peak_rss_kb(hub.process.pid) - before) / 1024
    assert grown_mb < 5, f"peak RSS grew by {grown_mb:.1f} MB"


def test_a_bad_retained_status_is_dead_lettered_once(
    storage: StorageDb, hub_factory: Any, wait_until: Callable[..., Any]
) -> None:
    """The broker hands a retained status to every hub at every start: counted each time,
    kept once."""
    topic = f"{hub_factory.topic_root}/v1/dev-garbage/status"
    publish_retained(topic, b"{this is not json")
    try:
        for run in range(2):
            hub = hub_factory.start(database_url=storage.url)
            wait_until(
                lambda hub=hub: hub.metric("hub_messages_rejected_total", reason="bad_json") == 1,
                what=f"the retained status refused (start {run + 1})",
            )
            hub.stop()
    finally:
        clear_retained([topic])
    letters = _fetch(storage.url, "SELECT reason FROM rejected_messages WHERE topic = $1", topic)
    assert [r["reason"] for r in letters] == ["bad_json"]


def test_a_failing_upkeep_round_is_logged_counted_and_the_next_one_runs(
    plain_storage: StorageDb, hub_factory: Any, wait_until: Callable[..., Any]
) -> None:
    hub = hub_factory.start(database_url=plain_storage.url, rollup_refresh_s=1.0)
    wait_until(lambda: hub.metric("hub_rollup_rounds_total") >= 1, what="a first round")
    _fetch(plain_storage.url, "ALTER TABLE rollup_watermarks RENAME TO rollup_watermarks_away")
    try:
        wait_until(
            lambda: hub.metric("hub_background_task_failures_total", task="rollups") >= 2,
            what="two failed rounds",
        )
        assert hub.get("/healthz")["rollups"] == "failing"
    finally:
        _fetch(plain_storage.url, "ALTER TABLE rollup_watermarks_away RENAME TO rollup_watermarks")
    rounds = hub.metric("hub_rollup_rounds_total")
    wait_until(lambda: hub.metric("hub_rollup_rounds_total") >= rounds + 2, what="rounds again")
    health = hub.get("/healthz")
    assert health["rollups"] == "ok" and health["status"] == "ok"
    assert "rollup_maintenance_failed" in hub.log() and "rollup_watermarks" in hub.log()
