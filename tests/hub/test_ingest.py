"""MQTT to database: counts, idempotent redelivery, rejection of bad messages, crash safety."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

AGE_BANDS = ["0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown"]


def _hour(offset: int) -> datetime:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return base - timedelta(hours=offset)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _stored(db: Callable[..., list[Any]], root_events: list[Any]) -> int:
    ids = [e.event_id for e in root_events]
    return int(db("SELECT count(*) FROM person_events WHERE event_id = ANY($1)", ids)[0][0])


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_events_land_and_stats_count_them(
    hub_factory: Any,
    event_factory: Any,
    publish_events: Any,
    db: Any,
    wait_until: Any,
    protocol: str,
) -> None:
    hub = hub_factory.start(mqtt_protocol=protocol)
    device = f"dev-{protocol.replace('.', '')}-{hub.topic_root[-6:]}"
    # (hours ago, gender, age) chosen to hit every gender and age band at least once.
    plan = [
        (3, "female", 8.0), (3, "male", 15.0), (3, None, 20.0),
        (2, "female", 30.0), (2, "female", 40.0), (2, "male", 50.0), (2, "male", 60.0),
        (1, "female", 70.0), (1, None, None), (1, "male", 24.9), (1, "female", 25.0),
    ]  # fmt: skip
    events = [
        event_factory(
            device, "cam-a", last_seen=_hour(h) + timedelta(minutes=10 + i), gender=g, age=a
        )
        for i, (h, g, a) in enumerate(plan)
    ]
    publish_events(hub.topic_root, events, protocol)
    wait_until(lambda: _stored(db, events) == len(events), what="events in the database")

    rows = db("SELECT gender, age_band FROM person_events WHERE device_id = $1", device)
    assert sorted((r["gender"] or "unknown", r["age_band"]) for r in rows) == sorted(
        (g or "unknown", band)
        for (_, g, _a), band in zip(
            plan,
            [
                "0-12",
                "13-17",
                "18-24",
                "25-34",
                "35-44",
                "45-54",
                "55-64",
                "65+",
                "unknown",
                "18-24",
                "25-34",
            ],
            strict=True,
        )
    )

    start, end = _iso(_hour(3)), _iso(_hour(0) + timedelta(hours=1))
    stats = hub.get(f"/v1/stats?start={start}&end={end}&bucket=hour&device_id={device}")
    assert stats["totals"]["total"] == 11
    assert stats["totals"]["gender"] == {"female": 5, "male": 4, "unknown": 2}
    assert stats["totals"]["age"] == {
        "0-12": 1, "13-17": 1, "18-24": 2, "25-34": 2, "35-44": 1,
        "45-54": 1, "55-64": 1, "65+": 1, "unknown": 1,
    }  # fmt: skip
    by_hour = {b["start"]: b for b in stats["buckets"]}
    assert len(by_hour) == 4
    counts = [by_hour[_iso(_hour(h))]["total"] for h in (3, 2, 1, 0)]
    assert counts == [3, 4, 4, 0]
    assert by_hour[_iso(_hour(2))]["gender"] == {
        "female": 2, "male": 2, "unknown": 0,
    }  # fmt: skip
    assert sum(b["age"]["unknown"] for b in stats["buckets"]) == 1

    daily = hub.get(f"/v1/stats?start={start}&end={end}&bucket=day&device_id={device}")
    assert sum(b["total"] for b in daily["buckets"]) == 11
    assert hub.get(f"/v1/stats?start={start}&end={end}&device_id=other")["totals"]["total"] == 0
    assert hub.metric("hub_events_stored_total") == 11


def test_redelivery_changes_nothing(
    hub: Any, event_factory: Any, publish_events: Any, db: Any, wait_until: Any
) -> None:
    events = [event_factory("dev-dup", f"cam-{i % 2}", gender="male", age=33) for i in range(20)]
    publish_events(hub.topic_root, events)
    wait_until(lambda: _stored(db, events) == 20, what="first delivery stored")
    before = db("SELECT * FROM devices WHERE device_id = 'dev-dup'")[0]

    publish_events(hub.topic_root, events)  # the broker or agent redelivering everything
    publish_events(hub.topic_root, events[:5] + events[:5])  # duplicates inside one batch
    wait_until(lambda: hub.metric("hub_events_duplicate_total") == 30, what="duplicates seen")

    assert _stored(db, events) == 20
    after = db("SELECT * FROM devices WHERE device_id = 'dev-dup'")[0]
    assert after["events"] == before["events"] == 20
    assert hub.metric("hub_events_stored_total") == 20


def test_malformed_messages_are_rejected_and_counted(
    hub: Any, event_factory: Any, publish: Any, publish_events: Any, db: Any, wait_until: Any
) -> None:
    root = hub.topic_root
    good = event_factory("dev-ok", "cam-1")
    missing = json.loads(good.model_dump_json())
    del missing["event_id"], missing["last_seen"]
    mismatched = event_factory("dev-other", "cam-1")
    huge = json.loads(event_factory("dev-ok", "cam-1").model_dump_json())
    huge["models"] = {"pad": "x" * 64}
    huge_payload = json.dumps(huge).encode() + b" " * 40_000
    bad = [
        (f"{root}/v1/dev-ok/events/cam-1", b"{not json"),
        (f"{root}/v1/dev-ok/events/cam-1", json.dumps(missing).encode()),
        (f"{root}/v1/dev-ok/events/cam-1", mismatched.model_dump_json().encode()),
        (f"{root}/v1/dev-ok/events/cam-1", huge_payload),
        (f"{root}/v1/dev-ok/events/cam-1", b'{"event_id": "\xff\xfe"}'),
        (f"{root}/v1/dev ok/events/cam-1", good.model_dump_json().encode()),
        (f"{root}/v1/dev-ok/events/cam-1", b""),
    ]
    publish(bad)
    expected = {
        "bad_json": 2,  # "{not json" and the empty payload
        "schema": 1,
        "device_mismatch": 1,
        "too_large": 1,
        "invalid_utf8": 1,
        "bad_topic": 1,
    }

    def counted() -> bool:
        return all(
            hub.metric("hub_messages_rejected_total", reason=r) == n for r, n in expected.items()
        )

    wait_until(counted, what=f"rejections {expected}")
    assert hub.get("/healthz")["status"] == "ok"
    letters = db(
        "SELECT reason, count(*) AS n FROM rejected_messages WHERE topic LIKE $1 GROUP BY 1",
        f"{root}/%",
    )
    assert {r["reason"]: r["n"] for r in letters} == expected

    publish_events(root, [good])
    wait_until(lambda: _stored(db, [good]) == 1, what="a valid event after the bad ones")
    assert hub.metric("hub_events_stored_total") == 1


def test_string_postgres_cannot_store_is_refused_without_blocking_the_batch(
    hub: Any, event_factory: Any, publish: Any, db: Any, wait_until: Any
) -> None:
    """A NUL in a string is valid JSON but PostgreSQL cannot store it: the contract refuses it,
    and the events around it in the same batch are stored."""
    good = [event_factory("dev-nul", "cam-1") for _ in range(3)]
    poisoned = json.loads(event_factory("dev-nul", "cam-1").model_dump_json())
    poisoned["models"] = {"age": "v1\u0000"}
    topic = f"{hub.topic_root}/v1/dev-nul/events/cam-1"
    messages = [(topic, e.model_dump_json().encode()) for e in good[:2]]
    messages += [
        (topic, json.dumps(poisoned).encode()),
        (topic, good[2].model_dump_json().encode()),
    ]
    publish(messages)
    wait_until(lambda: _stored(db, good) == 3, what="the good events around a bad row")
    wait_until(lambda: hub.metric("hub_messages_rejected_total", reason="schema") == 1)
    assert hub.get("/healthz")["status"] == "ok"


def test_killed_hub_loses_nothing(
    hub_factory: Any, event_factory: Any, publish_events: Any, db: Any, wait_until: Any
) -> None:
    """Messages published while the hub is down arrive once it is back (persistent session)."""
    first = hub_factory.start()
    first.stop(signal.SIGKILL)
    events = [event_factory("dev-crash", "cam-1") for _ in range(25)]
    publish_events(first.topic_root, events)

    second = hub_factory.start(first.settings)
    wait_until(lambda: _stored(db, events) == 25, what="events queued by the broker while down")
    assert second.metric("hub_events_stored_total") == 25


def test_the_fast_mqtt_client_is_in_use() -> None:
    """The hub's client builds on private paho methods (see ``cloud_hub.ingest.consumer``); a paho
    release without them falls back to the stock client, and this test says so."""
    from cloud_hub.ingest.mqtt_client import FastClient, client_class

    assert client_class() is FastClient
