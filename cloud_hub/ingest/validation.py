"""Turn one MQTT message into a ``PersonEvent``, a device message or a labelled rejection.

The contract's parse functions decide; this module only names the reason, so the
``hub_messages_rejected_total{reason}`` counter tells operators what is going wrong. The
same naming serves events and device telemetry (status, health and occupancy:
``cloud_hub.ingest.device_messages``), in one classifier (:func:`reason_for`).

Each topic is parsed once (and remembered per topic: a fleet reuses a bounded set), and
its parsed form is passed along: it picks the channel, names the device of a cleared
status, and tells the classifier whether the topic was what was wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from pydantic import ValidationError

from cloud_hub.received import HealthSample, Rejected, StatusUpdate, Telemetry
from edge_agent.contract import (
    DEFAULT_TIME_BOUNDS,
    MAX_PAYLOAD_BYTES,
    Channel,
    DeviceTopic,
    EventTimeError,
    PersonEvent,
    TimeBounds,
    parse_event,
    parse_health,
    parse_occupancy,
    parse_status,
    parse_topic,
)

REASONS = (
    "too_large",
    "bad_topic",
    "invalid_utf8",
    "bad_json",
    "schema",
    "bad_time",
    "device_mismatch",
    "db_rejected",
    "hub_error",  # the hub's own bug while validating: kept, so nothing is lost
)

_TELEMETRY: Final = frozenset((Channel.STATUS, Channel.HEALTH, Channel.OCCUPANCY))
_TOPICS_REMEMBERED: Final = 100_000


def reason_for(payload: bytes, topic_ok: bool, exc: ValueError) -> str:
    """Name why a message was refused; ``topic_ok`` says whether its topic parsed as the
    kind of topic the message was validated for."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return "too_large"
    if not topic_ok:
        return "bad_topic"
    if isinstance(exc, EventTimeError):
        return "bad_time"
    if isinstance(exc, ValidationError):
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return "invalid_utf8"
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            return "bad_json"
        return "schema"
    return "device_mismatch"


def reject(
    topic: str, payload: bytes, exc: ValueError, topic_ok: bool, once: bool = False
) -> Rejected:
    """The dead letter for a message the contract refused with ``exc``."""
    return Rejected(topic, reason_for(payload, topic_ok, exc), str(exc)[:1000], payload, once)


class MessageValidator:
    """Validates messages under one topic root and time bounds, parsing each topic once."""

    def __init__(self, root: str, bounds: TimeBounds = DEFAULT_TIME_BOUNDS) -> None:
        self._root = root
        self._bounds = bounds
        self._topics: dict[str, DeviceTopic | None] = {}

    def _parse_topic(self, topic: str) -> DeviceTopic | None:
        """The topic's parts, or None when it is not a contract topic; remembered."""
        if len(self._topics) >= _TOPICS_REMEMBERED:
            self._topics.clear()
        try:
            where: DeviceTopic | None = parse_topic(topic, self._root)
        except ValueError:
            where = None
        self._topics[topic] = where
        return where

    def validate(
        self, topic: str, payload: bytes, received_at: float
    ) -> PersonEvent | Telemetry | Rejected:
        """What the message carries, or why it was refused. Anything not on a status,
        health or occupancy topic is validated as an event (a bad topic is refused so)."""
        try:
            where = self._topics[topic]
        except KeyError:
            where = self._parse_topic(topic)
        if where is not None and where.channel in _TELEMETRY:
            return self._device_message(where, topic, payload, received_at)
        # A bad topic goes in as received, so the refusal names it as the contract does.
        parsed: DeviceTopic | str = topic
        if where is not None and where.channel is Channel.EVENTS:
            parsed = where
        try:
            return parse_event(parsed, payload, self._root, self._bounds)
        except ValueError as exc:
            return reject(topic, payload, exc, parsed is where)

    def _device_message(
        self, where: DeviceTopic, topic: str, payload: bytes, received_at: float
    ) -> Telemetry | Rejected:
        """The message a status, health or occupancy topic carries, or why it was refused."""
        root, bounds = self._root, self._bounds
        try:
            if where.channel is Channel.STATUS:
                status = parse_status(where, payload, root, bounds)
                return StatusUpdate(where.device_id, status, _utc(received_at))
            if where.channel is Channel.HEALTH:
                return HealthSample(parse_health(where, payload, root, bounds), _utc(received_at))
            return parse_occupancy(where, payload, root, bounds)
        except ValueError as exc:
            # A status is retained: the broker hands the same bad one over at every start.
            return reject(topic, payload, exc, True, once=where.channel is Channel.STATUS)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
