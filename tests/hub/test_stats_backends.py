"""/v1/stats through a running hub on each backend: events published over MQTT, stored
by ingest, rolled up by the hub's own upkeep, answered the same on both."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.hub.conftest import StorageDb


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_stats_api_on_each_backend(
    storage: StorageDb,
    hub_factory: Any,
    event_factory: Any,
    publish_events: Any,
    wait_until: Any,
) -> None:
    # A fast upkeep round, so hours this test stores are materialised while it runs.
    hub = hub_factory.start(database_url=storage.url, rollup_refresh_s=1.0, db_pool_size=4)
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    plan = [  # (hours ago, minute, gender, age)
        (30, 5, "female", 8.0), (30, 59, "male", 15.0), (26, 0, None, 20.0),
        (5, 10, "female", 30.0), (5, 20, "female", 40.0), (2, 30, "male", 70.0),
        (0, 0, None, None),
    ]  # fmt: skip
    events = [
        event_factory("dev-api", "cam-1", last_seen=hour - timedelta(hours=h, minutes=-m),
                      gender=g, age=a, track_id=i)
        for i, (h, m, g, a) in enumerate(plan)
        if hour - timedelta(hours=h, minutes=-m) < now
    ]  # fmt: skip
    publish_events(hub.topic_root, events)
    query = f"/v1/stats?start={_iso(now - timedelta(hours=31))}&end={_iso(now)}&device_id=dev-api"
    wait_until(lambda: hub.get(query)["totals"]["total"] == len(events), 30, "events counted")
    # Let the hub's upkeep materialise the older hours, then ask again: same answers.
    before = hub.get(query), hub.get(query + "&bucket=day")
    wait_until(lambda: hub.metric("hub_events_stored_total") == len(events), 10, "stored")
    time.sleep(2.5)  # two upkeep rounds
    after = hub.get(query), hub.get(query + "&bucket=day")
    assert after == before
    hourly, daily = after
    assert hourly["totals"]["gender"] == {
        "female": sum(1 for e in events if e.gender and e.gender.value.value == "female"),
        "male": sum(1 for e in events if e.gender and e.gender.value.value == "male"),
        "unknown": sum(1 for e in events if e.gender is None),
    }
    assert daily["totals"] == hourly["totals"]
    assert len(hourly["buckets"]) == 32
    by_hour = {b["start"]: b["total"] for b in hourly["buckets"] if b["total"]}
    expected: dict[str, int] = {}
    for e in events:
        label = _iso(e.last_seen.replace(minute=0, second=0, microsecond=0))
        expected[label] = expected.get(label, 0) + 1
    assert {k.replace("+00:00", "Z"): v for k, v in by_hour.items()} == expected
