"""Turn one MQTT message into a ``PersonEvent`` or a labelled rejection.

The contract's parse functions decide; this module only names the reason, so the
``hub_messages_rejected_total{reason}`` counter tells operators what is going wrong. The
same naming serves events and device telemetry (``cloud_hub.ingest.device_messages``).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from cloud_hub.storage.event_writes import Rejected
from edge_agent.contract import (
    DEFAULT_TIME_BOUNDS,
    MAX_PAYLOAD_BYTES,
    EventTimeError,
    PersonEvent,
    TimeBounds,
    parse_event,
    parse_event_topic,
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


def reason_for(payload: bytes, topic_ok: Callable[[], bool], exc: ValueError) -> str:
    """Name why a message was refused; ``topic_ok`` says whether its topic parses."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return "too_large"
    if not topic_ok():
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


def _event_topic_ok(topic: str, root: str) -> bool:
    try:
        parse_event_topic(topic, root)
    except ValueError:
        return False
    return True


def validate(
    topic: str, payload: bytes, root: str, bounds: TimeBounds = DEFAULT_TIME_BOUNDS
) -> PersonEvent | Rejected:
    """The event the message carries, or why it was refused."""
    try:
        return parse_event(topic, payload, root, bounds)
    except ValueError as exc:
        reason = reason_for(payload, lambda: _event_topic_ok(topic, root), exc)
        return Rejected(topic, reason, str(exc)[:1000], payload)
