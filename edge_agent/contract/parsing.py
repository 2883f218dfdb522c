"""Validating what arrives: size first, then the topic, the payload, and its times.

Every parser raises ``ValueError`` with the reason (pydantic's ``ValidationError`` and
:class:`~edge_agent.contract.times.EventTimeError` are ones), and checks that the device
(and camera) in the payload are the topic's: a device must not speak for another.

Each takes the topic as received (a string) or already parsed (a :class:`DeviceTopic`
from :func:`parse_topic`): a receiver that sorts messages by channel parses each topic
once and passes the parts on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, TypeVar

from pydantic import BaseModel

from edge_agent.contract.device_messages import (
    DailyCount,
    DesiredConfig,
    DeviceHealth,
    DeviceStatus,
    Occupancy,
)
from edge_agent.contract.events import PersonEvent
from edge_agent.contract.times import DEFAULT_TIME_BOUNDS, TimeBounds
from edge_agent.contract.topics import (
    DEFAULT_TOPIC_ROOT,
    Channel,
    DeviceTopic,
    EventTopic,
    parse_event_topic,
    parse_topic,
)

MAX_PAYLOAD_BYTES: Final = 16 * 1024

_M = TypeVar("_M", bound=BaseModel)


def _check_size(payload: bytes) -> None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")


def _same_device(
    where: DeviceTopic | EventTopic, device_id: str, camera_id: str | None = None
) -> None:
    if (device_id, camera_id) != (where.device_id, where.camera_id):
        raise ValueError(
            f"payload device/camera {device_id}/{camera_id} does not match "
            f"topic {where.device_id}/{where.camera_id}"
        )


def parse_event(
    topic: str | DeviceTopic,
    payload: bytes,
    root: str = DEFAULT_TOPIC_ROOT,
    bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
) -> PersonEvent:
    """Validate one received message; raise ``ValueError`` with the reason if it is bad.

    Checks the size before parsing, the JSON against the model, that the topic's
    device and camera are the payload's (a device must not speak for another), and that
    its times are within ``bounds`` (:class:`EventTimeError` when not).
    """
    _check_size(payload)
    where = parse_event_topic(topic, root) if isinstance(topic, str) else _on(Channel.EVENTS, topic)
    event = PersonEvent.model_validate_json(payload)
    _same_device(where, event.device_id, event.camera_id)
    now = datetime.now(UTC)
    bounds.check("first_seen", event.first_seen, now)
    bounds.check("last_seen", event.last_seen, now)
    return event


def _parse_device_message(
    channel: Channel, model: type[_M], topic: str | DeviceTopic, payload: bytes, root: str
) -> tuple[DeviceTopic, _M]:
    _check_size(payload)
    return _channel_topic(channel, topic, root), model.model_validate_json(payload)


def _channel_topic(channel: Channel, topic: str | DeviceTopic, root: str) -> DeviceTopic:
    return _on(channel, parse_topic(topic, root) if isinstance(topic, str) else topic)


def _on(channel: Channel, where: DeviceTopic) -> DeviceTopic:
    if where.channel is not channel:
        raise ValueError(f"topic {str(where)[:120]!r} is not a {channel.value} topic")
    return where


# A device's report on itself: from the topic's device (and camera), at a time in bounds.
_Report = TypeVar("_Report", DeviceStatus, DeviceHealth, Occupancy, DailyCount)


def _parse_report(
    channel: Channel,
    model: type[_Report],
    topic: str | DeviceTopic,
    payload: bytes,
    root: str,
    bounds: TimeBounds,
) -> _Report:
    where, report = _parse_device_message(channel, model, topic, payload, root)
    camera_id = report.camera_id if isinstance(report, Occupancy | DailyCount) else None
    _same_device(where, report.device_id, camera_id)
    bounds.check("at", report.at)
    return report


def parse_status(
    topic: str | DeviceTopic,
    payload: bytes,
    root: str = DEFAULT_TOPIC_ROOT,
    bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
) -> DeviceStatus | None:
    """Validate a status message; ``None`` for an empty payload (a cleared retained status)."""
    if not payload:
        _channel_topic(Channel.STATUS, topic, root)
        return None
    return _parse_report(Channel.STATUS, DeviceStatus, topic, payload, root, bounds)


def parse_health(
    topic: str | DeviceTopic,
    payload: bytes,
    root: str = DEFAULT_TOPIC_ROOT,
    bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
) -> DeviceHealth:
    """Validate a health message; its device must be the topic's, its time in bounds."""
    return _parse_report(Channel.HEALTH, DeviceHealth, topic, payload, root, bounds)


def parse_occupancy(
    topic: str | DeviceTopic,
    payload: bytes,
    root: str = DEFAULT_TOPIC_ROOT,
    bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
) -> Occupancy:
    """Validate an occupancy message; its device and camera must be the topic's, its time
    in bounds."""
    return _parse_report(Channel.OCCUPANCY, Occupancy, topic, payload, root, bounds)


def parse_daily_count(
    topic: str | DeviceTopic,
    payload: bytes,
    root: str = DEFAULT_TOPIC_ROOT,
    bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
) -> DailyCount | None:
    """Validate a camera's count of the day; ``None`` for an empty (cleared) retained
    payload. Its device and camera must be the topic's, its time in bounds."""
    if not payload:
        _channel_topic(Channel.COUNTS, topic, root)
        return None
    return _parse_report(Channel.COUNTS, DailyCount, topic, payload, root, bounds)


def parse_desired_config(
    topic: str | DeviceTopic, payload: bytes, root: str = DEFAULT_TOPIC_ROOT
) -> DesiredConfig | None:
    """Validate a desired config; ``None`` for an empty payload (the retained one cleared:
    the device goes back to its file's settings)."""
    if not payload:
        _channel_topic(Channel.CONFIG, topic, root)
        return None
    return _parse_device_message(Channel.CONFIG, DesiredConfig, topic, payload, root)[1]
