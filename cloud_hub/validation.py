"""Turn one MQTT message into a ``PersonEvent`` or a labelled rejection.

The contract's :func:`parse_event` decides; this module only names the reason, so the
``hub_messages_rejected_total{reason}`` counter tells operators what is going wrong.
"""

from __future__ import annotations

from pydantic import ValidationError

from cloud_hub.storage import Rejected
from edge_agent.contract import MAX_PAYLOAD_BYTES, PersonEvent, parse_event, parse_event_topic

REASONS = (
    "too_large",
    "bad_topic",
    "invalid_utf8",
    "bad_json",
    "schema",
    "device_mismatch",
    "db_rejected",
)


def _reason(topic: str, payload: bytes, root: str, exc: ValueError) -> str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return "too_large"
    try:
        parse_event_topic(topic, root)
    except ValueError:
        return "bad_topic"
    if isinstance(exc, ValidationError):
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return "invalid_utf8"
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            return "bad_json"
        return "schema"
    return "device_mismatch"


def validate(topic: str, payload: bytes, root: str) -> PersonEvent | Rejected:
    """The event the message carries, or why it was refused."""
    try:
        return parse_event(topic, payload, root)
    except ValueError as exc:
        return Rejected(topic, _reason(topic, payload, root, exc), str(exc)[:1000], payload)
