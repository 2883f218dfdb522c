"""The MQTT wire contract: topics and payloads, defined once and imported by both sides.

The edge agent builds these models and publishes ``model_dump_json()``; the cloud hub
parses incoming bytes with :func:`parse_event` and rejects anything that does not fit.
This module depends on Pydantic only, so the hub can import it without the vision stack.

Versioning: the topic carries the contract's major version (``v1``) and every payload
carries ``schema_version``. Additive, optional fields keep the version; anything else
means ``v2`` topics, served side by side until the fleet has moved.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

CONTRACT_VERSION: Final = 1
TOPIC_VERSION: Final = f"v{CONTRACT_VERSION}"
DEFAULT_TOPIC_ROOT: Final = "audience"

# Ids appear in MQTT topics, so they must not contain topic separators or wildcards.
_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
IdString = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
# Free-text fields: printable ASCII only (no NUL, which PostgreSQL cannot store).
_PRINTABLE: Final = r"^[\x20-\x7e]+$"

# An event stamped further in the future than this is a clock fault, not data.
MAX_CLOCK_SKEW: Final = timedelta(minutes=10)
MAX_PAYLOAD_BYTES: Final = 16 * 1024


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]


class Gender(StrEnum):
    """The two classes the gender models distinguish."""

    FEMALE = "female"
    MALE = "male"


class Direction(StrEnum):
    """Which way a person crossed the camera's counting line."""

    IN = "in"
    OUT = "out"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=256)


class GenderEstimate(_Strict):
    """One gender per person, with the aggregated probability of that gender."""

    value: Gender
    confidence: float = Field(ge=0.5, le=1.0)


class AgeEstimate(_Strict):
    """Expected age in years with an interval of the aggregated age distribution."""

    value: float = Field(ge=0.0, le=120.0)
    low: float = Field(ge=0.0, le=120.0)
    high: float = Field(ge=0.0, le=120.0)
    confidence: float = Field(ge=0.0, le=1.0, description="Probability mass in [low, high].")

    @model_validator(mode="after")
    def _ordered(self) -> AgeEstimate:
        if not self.low <= self.value <= self.high:
            raise ValueError("age must satisfy low <= value <= high")
        return self


class PersonEvent(_Strict):
    """One tracked person, published once when the track ends. No image, no embedding."""

    schema_version: Literal[1] = CONTRACT_VERSION
    event_id: uuid.UUID = Field(description="UUIDv7; the hub stores each id once.")
    device_id: IdString
    camera_id: IdString
    track_id: int = Field(ge=0, le=2**63 - 1)
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    dwell_s: float = Field(ge=0.0, le=7 * 24 * 3600.0)
    gender: GenderEstimate | None = None
    age: AgeEstimate | None = None
    direction: Direction | None = None
    crops: int = Field(ge=0, le=10_000, description="Face crops the estimate combines.")
    models: dict[
        Annotated[str, StringConstraints(pattern=_PRINTABLE, max_length=32)],
        Annotated[str, StringConstraints(pattern=_PRINTABLE, max_length=64)],
    ] = Field(default_factory=dict, max_length=8, description="Model name -> version.")

    @model_validator(mode="after")
    def _times(self) -> PersonEvent:
        if self.last_seen < self.first_seen:
            raise ValueError("last_seen is before first_seen")
        if self.last_seen > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("last_seen is in the future beyond the allowed clock skew")
        return self


@dataclass(frozen=True, slots=True)
class EventTopic:
    """The parts of an events topic: ``{root}/v1/{device_id}/events/{camera_id}``."""

    root: str
    device_id: str
    camera_id: str

    def __str__(self) -> str:
        return f"{self.root}/{TOPIC_VERSION}/{self.device_id}/events/{self.camera_id}"


def events_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """The wildcard filter a hub subscribes to for every device's events."""
    return f"{root}/{TOPIC_VERSION}/+/events/+"


_ID_RE: Final = re.compile(_ID_PATTERN)


def parse_event_topic(topic: str, root: str = DEFAULT_TOPIC_ROOT) -> EventTopic:
    """Split an events topic into its parts, or raise ``ValueError`` saying why not."""
    prefix = f"{root}/{TOPIC_VERSION}/"
    if not topic.startswith(prefix):
        raise ValueError(f"topic {topic[:120]!r} is not under {prefix!r}")
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 3 or parts[1] != "events":
        raise ValueError(f"topic {topic[:120]!r} is not {prefix}<device>/events/<camera>")
    device_id, _, camera_id = parts
    if not _ID_RE.match(device_id) or not _ID_RE.match(camera_id):
        raise ValueError(f"topic {topic[:120]!r} has an invalid device or camera id")
    return EventTopic(root, device_id, camera_id)


def parse_event(topic: str, payload: bytes, root: str = DEFAULT_TOPIC_ROOT) -> PersonEvent:
    """Validate one received message; raise ``ValueError`` with the reason if it is bad.

    Checks the size before parsing, the JSON against the model, and that the topic's
    device and camera are the payload's (a device must not speak for another).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    where = parse_event_topic(topic, root)
    event = PersonEvent.model_validate_json(payload)
    if (event.device_id, event.camera_id) != (where.device_id, where.camera_id):
        raise ValueError(
            f"payload device/camera {event.device_id}/{event.camera_id} does not match "
            f"topic {where.device_id}/{where.camera_id}"
        )
    return event


def uuid7(now_ns: int | None = None) -> uuid.UUID:
    """A time-ordered UUIDv7 (RFC 9562), so ids sort by creation time in the database.

    Python 3.11's ``uuid`` module has no v7 (it arrives in 3.14); this is the RFC's
    layout: 48 bits of Unix milliseconds, version, 74 random bits, variant.
    """
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68) << 64  # 12 random bits
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)
