"""The MQTT wire contract: what ``parse_event`` accepts and rejects, and ``uuid7``'s layout."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from edge_agent.contract import (
    MAX_PAYLOAD_BYTES,
    EventTopic,
    PersonEvent,
    events_subscription,
    parse_event,
    parse_event_topic,
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
        parse_event("audience/v1/dev-1/events/cam-1", payload(schema_version=2))


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
