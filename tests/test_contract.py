"""The MQTT wire contract: what the ``parse_*`` functions accept and reject, topics, ``uuid7``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from edge_agent.contract import (
    AGE_BAND_NAMES,
    CHANNELS,
    EARLIEST_EVENT_TIME,
    FLAT_EVENT_FIELDS,
    MAX_PAYLOAD_BYTES,
    Channel,
    DailyCount,
    DesiredConfig,
    DetectorSettings,
    DeviceHealth,
    DeviceState,
    DeviceStatus,
    DeviceTopic,
    Direction,
    EstimatorSettings,
    EventTimeError,
    EventTopic,
    Occupancy,
    PersonEvent,
    TimeBounds,
    TrackerSettings,
    config_subscription,
    config_topic,
    counts_topic,
    csv_cell,
    event_watcher,
    events_subscription,
    flat_event,
    health_subscription,
    health_topic,
    occupancy_subscription,
    occupancy_topic,
    parse_desired_config,
    parse_event,
    parse_event_topic,
    parse_health,
    parse_occupancy,
    parse_status,
    parse_topic,
    status_subscription,
    status_topic,
    subscription,
    uuid7,
)
from tests.conftest import make_event

ROOT = "audience"


def topic_for(event: PersonEvent, root: str = ROOT) -> str:
    return str(EventTopic(root, event.device_id, event.camera_id))


def payload(**changes: Any) -> bytes:
    """A valid event's JSON with some fields replaced (or removed with ``None``)."""
    data = json.loads(make_event().model_dump_json())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data).encode()


def test_valid_event_is_accepted_and_round_trips() -> None:
    event = make_event("dev-7", "cam_2")
    topic = topic_for(event)
    assert topic == "audience/v1/dev-7/events/cam_2"
    parsed = parse_event(topic, event.model_dump_json().encode())
    assert parsed == event
    assert parsed.event_id == event.event_id
    assert parsed.first_seen.tzinfo is not None
    # Through JSON and back, twice: nothing is lost or reformatted.
    again = PersonEvent.model_validate_json(parsed.model_dump_json())
    assert again == event
    assert again.model_dump_json() == event.model_dump_json()


def test_event_without_gender_or_age_is_valid() -> None:
    event = make_event(gender=None, age=None)
    parsed = parse_event(topic_for(event), event.model_dump_json().encode())
    assert parsed.gender is None
    assert parsed.age is None


def test_times_are_normalised_to_utc() -> None:
    plus_two = datetime.now(UTC).astimezone(timezone(timedelta(hours=2))) - timedelta(minutes=1)
    raw = payload(
        first_seen=(plus_two - timedelta(seconds=3)).isoformat(), last_seen=plus_two.isoformat()
    )
    event = parse_event("audience/v1/dev-1/events/cam-1", raw)
    assert event.last_seen.utcoffset() == timedelta(0)
    assert event.last_seen == plus_two


def test_device_mismatch_between_topic_and_payload_is_rejected() -> None:
    event = make_event("dev-1", "cam-1")
    with pytest.raises(ValueError, match="does not match"):
        parse_event("audience/v1/dev-2/events/cam-1", event.model_dump_json().encode())
    with pytest.raises(ValueError, match="does not match"):
        parse_event("audience/v1/dev-1/events/cam-9", event.model_dump_json().encode())


def test_extra_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"(?i)extra"):
        parse_event("audience/v1/dev-1/events/cam-1", payload(face_image="aGVsbG8="))
    nested = json.loads(payload())
    nested["gender"]["embedding"] = [0.1, 0.2]
    with pytest.raises(ValueError, match=r"(?i)extra"):
        parse_event("audience/v1/dev-1/events/cam-1", json.dumps(nested).encode())


def test_last_seen_before_first_seen_is_rejected() -> None:
    now = datetime.now(UTC)
    raw = payload(first_seen=now.isoformat(), last_seen=(now - timedelta(seconds=5)).isoformat())
    with pytest.raises(ValueError, match="before first_seen"):
        parse_event("audience/v1/dev-1/events/cam-1", raw)


def test_timestamp_far_in_the_future_is_rejected() -> None:
    future = datetime.now(UTC) + timedelta(hours=2)
    raw = payload(
        first_seen=(future - timedelta(seconds=4)).isoformat(), last_seen=future.isoformat()
    )
    with pytest.raises(ValueError, match="future"):
        parse_event("audience/v1/dev-1/events/cam-1", raw)
    # A small skew (a device clock a minute ahead) is tolerated.
    near = datetime.now(UTC) + timedelta(minutes=1)
    ok = payload(first_seen=(near - timedelta(seconds=4)).isoformat(), last_seen=near.isoformat())
    assert parse_event("audience/v1/dev-1/events/cam-1", ok).last_seen == near


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime.now(UTC).replace(tzinfo=None)
    raw = payload(
        first_seen=(naive - timedelta(seconds=4)).isoformat(), last_seen=naive.isoformat()
    )
    assert "+" not in raw.decode() and "Z" not in json.loads(raw)["last_seen"]
    with pytest.raises(ValueError, match=r"(?i)timezone"):
        parse_event("audience/v1/dev-1/events/cam-1", raw)


def test_oversize_payload_is_rejected_before_parsing() -> None:
    data = json.loads(payload())
    raw = json.dumps(data).encode() + b" " * (MAX_PAYLOAD_BYTES + 1)
    assert len(raw) > MAX_PAYLOAD_BYTES
    with pytest.raises(ValueError, match="exceeds"):
        parse_event("audience/v1/dev-1/events/cam-1", raw)
    # Garbage that large is refused for its size too, not parsed.
    with pytest.raises(ValueError, match="exceeds"):
        parse_event("audience/v1/dev-1/events/cam-1", b"{" * (MAX_PAYLOAD_BYTES + 1))


def test_missing_required_field_and_bad_json_are_rejected() -> None:
    with pytest.raises(ValueError):
        parse_event("audience/v1/dev-1/events/cam-1", payload(event_id=None))
    with pytest.raises(ValueError):
        parse_event("audience/v1/dev-1/events/cam-1", b"not json")
    with pytest.raises(ValueError):
        parse_event("audience/v1/dev-1/events/cam-1", payload(schema_version=3))
    with pytest.raises(ValueError, match="watcher and attention_s"):
        parse_event("audience/v1/dev-1/events/cam-1", payload(watcher=None))


def test_schema_1_events_of_older_agents_are_accepted_as_watchers() -> None:
    """A 0.1 agent's event (faces only, no watcher or attention) still parses, and reads
    as a watcher with unknown attention; schema 1 cannot carry the schema 2 fields."""
    old = make_event(schema_version=1)
    data = json.loads(old.model_dump_json(exclude={"watcher", "attention_s"}))
    assert data["schema_version"] == 1 and "watcher" not in data
    parsed = parse_event("audience/v1/dev-1/events/cam-1", json.dumps(data).encode())
    assert event_watcher(parsed) is True and parsed.attention_s is None
    assert flat_event(parsed)["watcher"] is True and flat_event(parsed)["attention_s"] is None
    with pytest.raises(ValueError, match="schema 2 fields"):
        parse_event(
            "audience/v1/dev-1/events/cam-1", json.dumps({**data, "watcher": False}).encode()
        )


def test_share_inputs_must_agree_with_the_estimates() -> None:
    """p_female and age_bands (optional, agents 0.3) come only with the estimate they
    describe, agree with it, and the bands are one distribution over the contract's."""
    topic = "audience/v1/dev-1/events/cam-1"
    bands = [0.0, 0.0, 0.1, 0.6, 0.3, 0.0, 0.0, 0.0]
    parsed = parse_event(topic, payload(p_female=0.8, age_bands=bands))
    assert parsed.p_female == 0.8 and parsed.age_bands == bands
    assert flat_event(parsed)["p_female"] == 0.8
    assert parse_event(topic, payload()).p_female is None  # older agents leave them out
    assert parse_event(topic, payload(p_female=0.5)).p_female == 0.5  # a tie is either
    refused = {
        "disagrees with the gender": {"p_female": 0.3},  # the event says female
        "p_female comes with a gender": {"p_female": 0.8, "gender": None},
        "age_bands come with an age": {"age_bands": bands, "age": None},
        "sum to 1": {"age_bands": [0.5] * len(AGE_BAND_NAMES)},
        "at least 8 items": {"age_bands": [1.0]},
        "less than or equal to 1": {"p_female": 1.5},
        "in \\[0, 1\\]": {"age_bands": [1.2, -0.2, 0, 0, 0, 0, 0, 0]},
    }
    for message, changes in refused.items():
        with pytest.raises(ValueError, match=message):
            parse_event(topic, payload(**changes))  # None: the field is left out


def test_schema_2_passer_by_and_attention_bounds() -> None:
    passer = make_event(watcher=False, gender=None, age=None)
    parsed = parse_event(topic_for(passer), passer.model_dump_json().encode())
    assert parsed.schema_version == 2 and event_watcher(parsed) is False
    assert parsed.attention_s == 0.0
    with pytest.raises(ValueError, match="exceeds dwell_s"):
        parse_event(topic_for(passer), payload(dwell_s=2.0, attention_s=9.0))
    with pytest.raises(ValueError):
        parse_event(topic_for(passer), payload(attention_s=-1.0))


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/dev-1/events/cam-1",  # wrong root
        "audience/v2/dev-1/events/cam-1",  # wrong version
        "audience/v1/+/events/cam-1",  # wildcards
        "audience/v1/dev-1/events/#",
        "audience/v1/dev-1/events/+",
        "audience/v1/dev-1/status",  # wrong shape
        "audience/v1/dev-1/events",
        "audience/v1/dev-1/events/cam-1/extra",
        "audience/v1/dev-1/occupancy/cam-1",
        "audience/v1//events/cam-1",
        "audience/v1/dev 1/events/cam-1",
        "/audience/v1/dev-1/events/cam-1",
    ],
)
def test_bad_topics_are_rejected(topic: str) -> None:
    raw = make_event("dev-1", "cam-1").model_dump_json().encode()
    with pytest.raises(ValueError, match="topic"):
        parse_event(topic, raw)


def test_topic_root_is_configurable() -> None:
    event = make_event("dev-1", "cam-1")
    raw = event.model_dump_json().encode()
    assert parse_event("site-a/v1/dev-1/events/cam-1", raw, root="site-a") == event
    with pytest.raises(ValueError):
        parse_event("audience/v1/dev-1/events/cam-1", raw, root="site-a")
    assert parse_event_topic("site-a/v1/d/events/c", "site-a") == EventTopic("site-a", "d", "c")
    assert events_subscription("site-a") == "site-a/v1/+/events/+"


def test_ids_that_cannot_be_topic_levels_are_rejected_in_payloads() -> None:
    for bad in ("dev/1", "dev+", "#", "", "-leading-dash", "x" * 65):
        with pytest.raises(ValueError):
            make_event(device_id=bad)


def test_uuid7_layout() -> None:
    for _ in range(200):
        value = uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
    # The top 48 bits are the Unix time in milliseconds.
    now_ns = time.time_ns()
    assert uuid7(now_ns).int >> 80 == now_ns // 1_000_000
    # Random bits differ between ids of the same millisecond.
    assert len({uuid7(now_ns) for _ in range(100)}) == 100


def test_uuid7_sorts_by_time() -> None:
    start = time.time_ns()
    stamps = [start + i * 1_000_000 for i in range(0, 500, 7)]  # 7 ms apart
    ids = [uuid7(ns) for ns in stamps]
    assert sorted(ids) == ids
    assert sorted(str(i) for i in ids) == [str(i) for i in ids]  # text order too
    # Ids made later in real time sort after earlier ones (millisecond resolution).
    first = uuid7()
    time.sleep(0.003)
    assert uuid7() > first


@pytest.mark.parametrize(
    "models", [{"age\u0000": "v1"}, {"age": "v1\u0000"}, {"age": "v1\n"}, {"": "v1"}]
)
def test_model_names_and_versions_must_be_printable(models: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        parse_event("audience/v1/dev-1/events/cam-1", payload(models=models))


def test_track_id_must_fit_a_64_bit_column() -> None:
    with pytest.raises(ValueError):
        parse_event("audience/v1/dev-1/events/cam-1", payload(track_id=2**63))


# --- Status, health, occupancy and desired config -----------------------------------------


def recent(seconds: float = 5.0) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def make_status(**changes: Any) -> DeviceStatus:
    data: dict[str, Any] = {
        "device_id": "dev-1",
        "state": "online",
        "at": recent(),
        "agent_version": "0.1.0",
        "models": {"gender": "v1-ftz", "age": "v1-ftz"},
        "cameras": [
            {"camera_id": "cam-1", "state": "live", "fps": 14.8},
            {"camera_id": "cam-2", "state": "connecting"},
        ],
        "config_version": "2026-11-24.1",
        "outbox_dropped": 0,
    }
    data.update(changes)
    return DeviceStatus.model_validate(data)


def make_health(**changes: Any) -> DeviceHealth:
    data: dict[str, Any] = {
        "device_id": "dev-1",
        "at": recent(),
        "cameras": [{"camera_id": "cam-1", "fps_processed": 14.9, "fps_dropped": 0.4}],
        "latency_ms": {"detect": {"p50": 6.1, "p95": 9.8}, "estimate": {"p50": 3.0, "p95": 4.2}},
        "outbox_depth": 3,
        "outbox_dropped": 0,
        "cpu_percent": 41.5,
        "memory_mb": 212.0,
        "temperature_c": 58.0,
    }
    data.update(changes)
    return DeviceHealth.model_validate(data)


def make_occupancy(**changes: Any) -> Occupancy:
    data: dict[str, Any] = {"device_id": "dev-1", "camera_id": "cam-1", "at": recent(), "people": 2}
    data.update(changes)
    return Occupancy.model_validate(data)


def make_config(**changes: Any) -> DesiredConfig:
    data: dict[str, Any] = {
        "version": "2026-11-24.1",
        "detector": {"score_threshold": 0.7},
        "tracker": {"max_missed_s": 1.5, "min_hits": 2},
        "estimator": {"tta": False},
        "health_interval_s": 30,
    }
    data.update(changes)
    return DesiredConfig.model_validate(data)


MAKERS: dict[str, Callable[..., BaseModel]] = {
    "status": make_status,
    "health": make_health,
    "occupancy": make_occupancy,
    "config": make_config,
}


def test_topic_builders_and_subscriptions() -> None:
    assert status_topic(ROOT, "dev-1") == "audience/v1/dev-1/status"
    assert health_topic(ROOT, "dev-1") == "audience/v1/dev-1/health"
    assert occupancy_topic(ROOT, "dev-1", "cam-1") == "audience/v1/dev-1/occupancy/cam-1"
    assert config_topic("site-a", "dev-1") == "site-a/v1/dev-1/config"
    assert status_subscription() == "audience/v1/+/status"
    assert health_subscription("site-a") == "site-a/v1/+/health"
    assert occupancy_subscription() == "audience/v1/+/occupancy/+"
    assert config_subscription() == "audience/v1/+/config"
    assert subscription(Channel.EVENTS) == events_subscription()
    for bad in ("dev/1", "+", "#", "", "x" * 65):
        with pytest.raises(ValueError, match="not a valid topic id"):
            status_topic(ROOT, bad)
        with pytest.raises(ValueError, match="not a valid topic id"):
            occupancy_topic(ROOT, "dev-1", bad)


def test_parse_topic_round_trips_every_channel() -> None:
    built = [
        str(EventTopic(ROOT, "dev-1", "cam-1")),
        status_topic(ROOT, "dev-1"),
        health_topic(ROOT, "dev-1"),
        occupancy_topic(ROOT, "dev-1", "cam-1"),
        config_topic(ROOT, "dev-1"),
        counts_topic(ROOT, "dev-1", "cam-1"),
    ]
    parsed = [parse_topic(topic) for topic in built]
    assert [p.channel for p in parsed] == list(Channel)
    assert [str(p) for p in parsed] == built
    assert parsed[3] == DeviceTopic(ROOT, "dev-1", Channel.OCCUPANCY, "cam-1")
    assert parsed[1].camera_id is None


@pytest.mark.parametrize(
    "topic",
    [
        "audience/v1/dev-1/status/cam-1",
        "audience/v1/dev-1/occupancy",
        "audience/v1/dev-1/health/x/y",
        "audience/v1/dev-1/telemetry",
        "audience/v1/dev-1",
        "audience/v1/+/status",
        "audience/v1/dev-1/occupancy/+",
        "audience/v2/dev-1/status",
        "other/v1/dev-1/config",
    ],
)
def test_parse_topic_rejects_bad_topics(topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        parse_topic(topic)


def test_valid_messages_parse_and_round_trip() -> None:
    status = make_status()
    assert parse_status(status_topic(ROOT, "dev-1"), status.model_dump_json().encode()) == status
    health = make_health()
    assert parse_health(health_topic(ROOT, "dev-1"), health.model_dump_json().encode()) == health
    seen = make_occupancy()
    topic = occupancy_topic(ROOT, "dev-1", "cam-1")
    assert parse_occupancy(topic, seen.model_dump_json().encode()) == seen
    config = make_config()
    parsed = parse_desired_config(config_topic(ROOT, "dev-1"), config.model_dump_json().encode())
    assert parsed == config
    assert (
        parsed is not None and parsed.tracker.min_hits == 2 and parsed.detector.min_face_px is None
    )
    for model in (status, health, seen, config):
        again = type(model).model_validate_json(model.model_dump_json())
        assert again.model_dump_json() == model.model_dump_json()


def test_last_will_needs_no_runtime_information() -> None:
    will = DeviceStatus.last_will("dev-1")
    assert will.state is DeviceState.OFFLINE
    assert will.at is None and will.agent_version is None and will.cameras == []
    raw = will.model_dump_json().encode()
    assert parse_status(status_topic(ROOT, "dev-1"), raw) == will
    # An online status must say when and which agent.
    with pytest.raises(ValueError, match="online status needs"):
        make_status(at=None)
    with pytest.raises(ValueError, match="online status needs"):
        make_status(agent_version=None)
    # A graceful offline status may carry everything.
    assert make_status(state="offline").state is DeviceState.OFFLINE


def test_empty_retained_payloads_mean_cleared() -> None:
    assert parse_status(status_topic(ROOT, "dev-1"), b"") is None
    assert parse_desired_config(config_topic(ROOT, "dev-1"), b"") is None
    with pytest.raises(ValueError, match="not a config topic"):
        parse_desired_config(status_topic(ROOT, "dev-1"), b"")
    with pytest.raises(ValueError):
        parse_health(health_topic(ROOT, "dev-1"), b"")


def test_messages_on_the_wrong_channel_or_device_are_rejected() -> None:
    raw = make_status().model_dump_json().encode()
    with pytest.raises(ValueError, match="not a status topic"):
        parse_status(health_topic(ROOT, "dev-1"), raw)
    with pytest.raises(ValueError, match="does not match"):
        parse_status(status_topic(ROOT, "dev-2"), raw)
    with pytest.raises(ValueError, match="does not match"):
        parse_health(health_topic(ROOT, "dev-2"), make_health().model_dump_json().encode())
    seen = make_occupancy().model_dump_json().encode()
    with pytest.raises(ValueError, match="does not match"):
        parse_occupancy(occupancy_topic(ROOT, "dev-1", "cam-9"), seen)
    with pytest.raises(ValueError, match="does not match"):
        parse_occupancy(occupancy_topic(ROOT, "dev-9", "cam-1"), seen)
    with pytest.raises(ValueError, match="exceeds"):
        parse_health(health_topic(ROOT, "dev-1"), b" " * (MAX_PAYLOAD_BYTES + 1))


@pytest.mark.parametrize("kind", list(MAKERS))
def test_extra_fields_are_rejected_everywhere(kind: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)extra"):
        MAKERS[kind](surprise=1)


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("status", {"cameras": [{"camera_id": "cam-1", "state": "live", "image": "x"}]}),
        ("health", {"latency_ms": {"detect": {"p50": 1, "p95": 2, "p99": 3}}}),
        ("health", {"cameras": [{"camera_id": "c", "fps_processed": 1, "fps_dropped": 0, "x": 1}]}),
        ("config", {"detector": {"score_threshold": 0.5, "model": "short_range"}}),
        ("config", {"mqtt": {"host": "evil.example"}}),
        ("config", {"tracker": {"iou_match": 0.5}}),
    ],
)
def test_nested_extra_fields_are_rejected(kind: str, changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"(?i)extra"):
        MAKERS[kind](**changes)


TELEMETRY_PARSERS: dict[str, tuple[Callable[..., Any], str]] = {
    "status": (parse_status, "audience/v1/dev-1/status"),
    "health": (parse_health, "audience/v1/dev-1/health"),
    "occupancy": (parse_occupancy, "audience/v1/dev-1/occupancy/cam-1"),
}


@pytest.mark.parametrize("kind", ["status", "health", "occupancy"])
def test_naive_future_and_unset_clock_times_are_rejected(kind: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)timezone"):
        MAKERS[kind](at=datetime.now(UTC).replace(tzinfo=None))
    parse, topic = TELEMETRY_PARSERS[kind]
    for at, why in (
        (datetime.now(UTC) + timedelta(hours=1), "future"),
        (datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC), "earliest"),
    ):
        raw = MAKERS[kind](at=at).model_dump_json().encode()
        with pytest.raises(EventTimeError, match=why):
            parse(topic, raw)
    plus_two = recent().astimezone(timezone(timedelta(hours=2)))
    assert MAKERS[kind](at=plus_two).model_dump()["at"].utcoffset() == timedelta(0)


def test_earliest_time_boundary_is_exact_and_configurable() -> None:
    """2020-01-01T00:00:00Z is accepted, one microsecond earlier is not (either time)."""
    edge = datetime(2020, 1, 1, tzinfo=UTC)
    assert edge == EARLIEST_EVENT_TIME
    topic = "audience/v1/dev-1/events/cam-1"
    at_edge = payload(first_seen=edge.isoformat(), last_seen=(edge + timedelta(1)).isoformat())
    assert parse_event(topic, at_edge).first_seen == edge
    just_before = edge - timedelta(microseconds=1)
    for first, last in ((just_before, edge), (just_before - timedelta(1), just_before)):
        raw = payload(first_seen=first.isoformat(), last_seen=last.isoformat())
        with pytest.raises(EventTimeError, match="before the earliest accepted time"):
            parse_event(topic, raw)
    # A hub that sets its own earliest time (HUB_EARLIEST_EVENT) moves the boundary.
    older = payload(first_seen="2015-06-01T00:00:00Z", last_seen="2015-06-01T00:00:04Z")
    with pytest.raises(EventTimeError):
        parse_event(topic, older)
    lenient = TimeBounds(earliest=datetime(2010, 1, 1, tzinfo=UTC))
    assert parse_event(topic, older, bounds=lenient).last_seen.year == 2015
    assert not TimeBounds().clock_is_set(datetime(1970, 1, 1, 0, 1, tzinfo=UTC))
    assert TimeBounds().clock_is_set(edge)


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("status", {"device_id": "dev/1"}),
        ("status", {"device_id": "+"}),
        ("status", {"cameras": [{"camera_id": "cam#1", "state": "live"}]}),
        ("health", {"device_id": ""}),
        ("health", {"cameras": [{"camera_id": "-x", "fps_processed": 1, "fps_dropped": 0}]}),
        ("occupancy", {"camera_id": "cam/1"}),
        ("occupancy", {"device_id": "x" * 65}),
    ],
)
def test_bad_ids_are_rejected(kind: str, changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"(?i)pattern"):
        MAKERS[kind](**changes)


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("status", {"outbox_dropped": -1}),
        ("status", {"cameras": [{"camera_id": "cam-1", "state": "live", "fps": -1.0}]}),
        ("health", {"outbox_depth": -1}),
        ("health", {"outbox_dropped": -3}),
        ("health", {"cpu_percent": -0.1}),
        ("health", {"cpu_percent": 100.1}),
        ("health", {"memory_mb": -1}),
        ("health", {"cameras": [{"camera_id": "c", "fps_processed": -1, "fps_dropped": 0}]}),
        ("health", {"cameras": [{"camera_id": "c", "fps_processed": 1, "fps_dropped": -1}]}),
        ("health", {"latency_ms": {"detect": {"p50": -1, "p95": 2}}}),
        ("occupancy", {"people": -1}),
        ("config", {"tracker": {"min_hits": 0}}),
        ("config", {"tracker": {"max_missed_s": 0}}),
        ("config", {"detector": {"score_threshold": 1.0}}),
        ("config", {"health_interval_s": 0.5}),
    ],
)
def test_negative_counts_and_out_of_range_values_are_rejected(
    kind: str, changes: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=r"(?i)greater|less"):
        MAKERS[kind](**changes)


@pytest.mark.parametrize(
    ("kind", "changes", "reason"),
    [
        ("status", {"state": "sleeping"}, "online"),
        ("status", {"cameras": [{"camera_id": "c", "state": "paused"}]}, "live"),
        ("status", {"cameras": [{"camera_id": "c", "state": "live"}] * 2}, "more than once"),
        ("status", {"config_error": "bad\u0000value"}, "pattern"),
        ("status", {"agent_version": "0.1\n"}, "pattern"),
        ("health", {"latency_ms": {"detect": {"p50": 5, "p95": 2}}}, "p95 is below p50"),
        ("config", {"version": ""}, "pattern|at least"),
        ("config", {"schema_version": 2}, "1"),
        ("config", {"estimator": {"tta": "sometimes"}}, "bool"),
    ],
)
def test_other_invalid_values_are_rejected(kind: str, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        MAKERS[kind](**changes)


def test_desired_config_may_be_just_a_version() -> None:
    config = DesiredConfig(version="empty")
    assert config.detector == DetectorSettings()
    assert config.tracker == TrackerSettings()
    assert config.estimator == EstimatorSettings()
    assert config.health_interval_s is None
    raw = b'{"version": "v7", "tracker": {"min_hits": 4}}'
    parsed = parse_desired_config(config_topic(ROOT, "dev-1"), raw)
    assert parsed is not None and parsed.tracker.min_hits == 4 and parsed.schema_version == 1


def test_channels_describe_every_contract_topic() -> None:
    assert set(CHANNELS) == set(Channel)
    assert CHANNELS[Channel.STATUS].retain and CHANNELS[Channel.CONFIG].retain
    assert not CHANNELS[Channel.CONFIG].from_device
    assert CHANNELS[Channel.EVENTS].payload is PersonEvent
    assert CHANNELS[Channel.EVENTS].qos == 1
    assert {spec.payload for spec in CHANNELS.values()} == {
        PersonEvent,
        DeviceStatus,
        DeviceHealth,
        Occupancy,
        DesiredConfig,
        DailyCount,
    }


def test_flat_event_row_has_every_field_in_order() -> None:
    """One flat shape for CSV and exports: every field, in order, JSON values or None."""
    full = make_event().model_copy(update={"direction": Direction.IN, "return_of": uuid7()})
    row = flat_event(full)
    assert tuple(row) == FLAT_EVENT_FIELDS
    assert (row["gender"], row["age"]) == ("female", 30.0)
    assert row["direction"] == "in"
    assert row["return_of"] == str(full.return_of)
    assert json.loads(json.dumps(row)) == row  # plain JSON values only
    bare = flat_event(make_event(gender=None, age=None))
    assert [bare[k] for k in ("gender", "gender_confidence", "age", "age_low")] == [None] * 4
    assert csv_cell(None) == ""
    assert csv_cell({"b": "2", "a": "1"}) == '{"a":"1","b":"2"}'


def test_parsers_take_a_topic_already_parsed() -> None:
    """A receiver that sorted the message by its parsed topic passes the parts on."""
    event = make_event("dev-7", "cam_2")
    topic = topic_for(event)
    assert parse_event(parse_topic(topic), event.model_dump_json().encode()) == event
    with pytest.raises(ValueError, match="is not a events topic"):
        parse_event(parse_topic(status_topic(ROOT, "dev-7")), event.model_dump_json().encode())
    other = parse_topic(topic_for(make_event("dev-8", "cam_2")))
    with pytest.raises(ValueError, match="does not match"):
        parse_event(other, event.model_dump_json().encode())
