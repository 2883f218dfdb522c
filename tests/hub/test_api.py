"""The HTTP API over real data: paging, devices, the Redis recent cache, health, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

import cloud_hub


def test_event_paging_returns_every_event_once(
    hub: Any, event_factory: Any, publish_events: Any, wait_until: Any
) -> None:
    now = datetime.now(UTC)
    # Many events share a last_seen, so the cursor must break ties on event_id.
    events = [
        event_factory("dev-page", f"cam-{i % 3}", last_seen=now - timedelta(seconds=i // 4))
        for i in range(237)
    ]
    publish_events(hub.topic_root, events)
    wait_until(
        lambda: len(hub.get("/v1/events?limit=1000&device_id=dev-page")["events"]) == 237,
        what="all events stored",
    )

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "/v1/events?limit=10&device_id=dev-page" + (f"&cursor={cursor}" if cursor else "")
        page = hub.get(query)
        seen += [e["event_id"] for e in page["events"]]
        keys = [(e["last_seen"], e["event_id"]) for e in page["events"]]
        assert keys == sorted(keys)
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 24
    assert len(seen) == len(set(seen)) == 237
    assert set(seen) == {str(e.event_id) for e in events}

    cam = hub.get("/v1/events?limit=1000&device_id=dev-page&camera_id=cam-1")["events"]
    assert len(cam) == 79 and {e["camera_id"] for e in cam} == {"cam-1"}
    first = cam[0]
    assert first["models"] == {"detector": "blazeface-full", "age": "dlib-int8"}
    assert first["age_band"] == "25-34" and first["gender"] == "female"
    status, _ = hub.request("/v1/events?limit=1001")
    assert status == 422
    assert hub.request("/v1/events?cursor=garbage")[0] == 422


def test_devices_report_last_seen_and_counts(
    hub: Any, event_factory: Any, publish_events: Any, wait_until: Any
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    a = [event_factory("dev-a", "cam-1", last_seen=t0 + timedelta(minutes=i)) for i in range(5)]
    b = [event_factory("dev-b", "cam-9", last_seen=t0 + timedelta(minutes=20))]
    publish_events(hub.topic_root, a + b)

    def devices() -> dict[str, Any]:
        found = {d["device_id"]: d for d in hub.get("/v1/devices")}
        return found if found.get("dev-a", {}).get("events") == 5 and "dev-b" in found else {}

    found = wait_until(devices, what="both devices")
    assert datetime.fromisoformat(found["dev-a"]["last_seen"]) == t0 + timedelta(minutes=4)
    assert datetime.fromisoformat(found["dev-a"]["first_seen"]) == t0
    assert datetime.fromisoformat(found["dev-b"]["last_seen"]) == t0 + timedelta(minutes=20)
    assert found["dev-b"]["events"] == 1


def test_recent_cache_holds_new_events_with_a_ttl(
    hub: Any, event_factory: Any, publish_events: Any, wait_until: Any
) -> None:
    events = [event_factory("dev-live", "cam-door", track_id=i) for i in range(6)]
    publish_events(hub.topic_root, events[:3])
    publish_events(hub.topic_root, events[3:])
    path = "/v1/cameras/dev-live/cam-door/recent"
    recent = wait_until(lambda: len(hub.get(path)["events"]) == 6 and hub.get(path), what="cache")
    assert {e["event_id"] for e in recent["events"]} == {str(e.event_id) for e in events}
    assert [e["track_id"] for e in recent["events"]] == [5, 4, 3, 2, 1, 0]  # newest first
    assert len(hub.get(path + "?limit=2")["events"]) == 2

    client = redis.Redis.from_url(hub.settings.redis_url, decode_responses=True)
    key = f"hub:{hub.topic_root}:recent:dev-live:cam-door"
    assert client.zcard(key) == 6
    assert 0 < client.ttl(key) <= 3600
    last_seen = client.hget(f"hub:{hub.topic_root}:device_last_seen", "dev-live")
    assert isinstance(last_seen, str)
    assert datetime.fromisoformat(last_seen) == max(e.last_seen for e in events)


def test_hub_runs_without_redis(
    hub_factory: Any, event_factory: Any, publish_events: Any, db: Any, wait_until: Any
) -> None:
    hub = hub_factory.start(redis_url="redis://127.0.0.1:1/0")
    health = hub.get("/healthz")
    rounds = health.pop("rollup_rounds")
    assert health == {
        "status": "ok",
        "db": "ok",
        "mqtt": "ok",
        "redis": "disabled",
        "rollups": "ok",
    }
    assert isinstance(rounds, int) and rounds >= 0
    assert hub.metric("hub_redis_errors_total") >= 1
    # Which release answers, for dashboards and alerts across hubs.
    assert hub.metric("hub_build_info", version=cloud_hub.__version__) == 1.0
    event = event_factory("dev-noredis", "cam-1")
    publish_events(hub.topic_root, [event])
    wait_until(lambda: hub.metric("hub_events_stored_total") == 1, what="event stored")
    assert hub.request("/v1/cameras/dev-noredis/cam-1/recent")[0] == 503


def test_health_is_503_when_the_broker_is_unreachable(hub_factory: Any, free_port: Any) -> None:
    hub = hub_factory.start(mqtt_port=free_port(), healthy=False)
    status, body = hub.request("/healthz")
    assert status == 503
    body.pop("rollup_rounds")
    assert body == {
        "status": "degraded",
        "db": "ok",
        "mqtt": "down",
        "redis": "ok",
        "rollups": "ok",
    }


def test_stats_and_migrate_commands(
    hub: Any, event_factory: Any, publish_events: Any, wait_until: Any
) -> None:
    events = [
        event_factory("dev-cli", "cam-1", gender=g, age=a) for g, a in [("male", 70), (None, 10)]
    ]
    publish_events(hub.topic_root, events)
    wait_until(lambda: hub.get("/v1/stats?device_id=dev-cli")["totals"]["total"] == 2)

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud_hub.cli",
            "stats",
            "--url",
            hub.base_url,
            "--device-id",
            "dev-cli",
            "--api-key",
            hub.api_key,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    total_line = next(line for line in out.splitlines() if line.startswith("TOTAL"))
    # total, watchers, female, male, unknown, then the nine age bands
    assert total_line.split()[1:] == [
        "2",
        "2",
        "0",
        "1",
        "1",
        "1",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "1",
        "0",
    ]

    env = {**os.environ, "HUB_DATABASE_URL": hub.settings.database_url}
    again = subprocess.run(
        [sys.executable, "-m", "cloud_hub.cli", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "none needed" in again.stdout


def test_a_return_visit_is_stored_with_the_earlier_event(
    hub: Any, event_factory: Any, publish_events: Any, wait_until: Any
) -> None:
    first = event_factory("dev-back", "cam-1", track_id=1)
    again = event_factory("dev-back", "cam-1", track_id=2).model_copy(
        update={"return_of": first.event_id}
    )
    publish_events(hub.topic_root, [first, again])
    wait_until(
        lambda: len(hub.get("/v1/events?device_id=dev-back")["events"]) == 2, 20, "both stored"
    )
    stored = {e["track_id"]: e for e in hub.get("/v1/events?device_id=dev-back")["events"]}
    assert stored[1]["return_of"] is None
    assert stored[2]["return_of"] == str(first.event_id)
