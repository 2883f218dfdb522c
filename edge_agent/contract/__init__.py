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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Final, Literal, TypeVar

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
# An event stamped before this is a clock that was never set (a device without a
# real-time clock boots at 1970), not data. The hub may lower or raise it
# (``HUB_EARLIEST_EVENT``); the agent holds events until its clock is past it.
EARLIEST_EVENT_TIME: Final = datetime(2020, 1, 1, tzinfo=UTC)
MAX_PAYLOAD_BYTES: Final = 16 * 1024


class EventTimeError(ValueError):
    """A message's time is outside what a hub accepts: before the earliest time (a clock
    that was never set) or beyond the clock-skew bound (a clock that runs ahead)."""


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """The one rule for acceptable message times, shared by the agent and the hub.

    A time must be at or after ``earliest`` and at most ``max_skew`` ahead of the
    receiver's clock. Every time a message carries is checked, so whatever the database
    stores can be turned into hours, days and series without overflowing.
    """

    earliest: datetime = EARLIEST_EVENT_TIME
    max_skew: timedelta = MAX_CLOCK_SKEW

    def check(self, what: str, moment: datetime | None, now: datetime | None = None) -> None:
        """Raise :class:`EventTimeError` saying why ``moment`` is not acceptable."""
        if moment is None:
            return
        if moment < self.earliest:
            raise EventTimeError(
                f"{what} {moment.isoformat()} is before the earliest accepted time "
                f"{self.earliest.isoformat()} (was the device's clock set?)"
            )
        if moment > (now or datetime.now(UTC)) + self.max_skew:
            raise EventTimeError(
                f"{what} {moment.isoformat()} is in the future beyond the allowed clock "
                f"skew of {self.max_skew.total_seconds():.0f} s"
            )

    def clock_is_set(self, now: datetime | None = None) -> bool:
        """Whether a device's wall clock can stamp events yet (it is past ``earliest``)."""
        return (now or datetime.now(UTC)) >= self.earliest


DEFAULT_TIME_BOUNDS: Final = TimeBounds()


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+14:00 is in year 0 in UTC
        raise ValueError(f"{value.isoformat()} is outside the years 1-9999 in UTC") from exc


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
    return_of: uuid.UUID | None = Field(
        default=None,
        description="Set when the device recognised this person as coming back within its "
        "return window: the event_id of their previous visit. Unique visitors are the events "
        "without it. Recognition uses a face embedding that never leaves the device.",
    )
    models: dict[
        Annotated[str, StringConstraints(pattern=_PRINTABLE, max_length=32)],
        Annotated[str, StringConstraints(pattern=_PRINTABLE, max_length=64)],
    ] = Field(default_factory=dict, max_length=8, description="Model name -> version.")

    @model_validator(mode="after")
    def _times(self) -> PersonEvent:
        # Whether the times are plausible at all is the receiver's call (TimeBounds, in
        # parse_event); the model only checks that they are consistent.
        if self.last_seen < self.first_seen:
            raise ValueError("last_seen is before first_seen")
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


def parse_event(
    topic: str,
    payload: bytes,
    root: str = DEFAULT_TOPIC_ROOT,
    bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
) -> PersonEvent:
    """Validate one received message; raise ``ValueError`` with the reason if it is bad.

    Checks the size before parsing, the JSON against the model, that the topic's
    device and camera are the payload's (a device must not speak for another), and that
    its times are within ``bounds`` (:class:`EventTimeError` when not).
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
    now = datetime.now(UTC)
    bounds.check("first_seen", event.first_seen, now)
    bounds.check("last_seen", event.last_seen, now)
    return event


# --- Device topics beside the events: status, health, occupancy, desired config ---------

_Reason = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
_ModelName = Annotated[str, StringConstraints(pattern=_PRINTABLE, max_length=32)]
_ModelVersion = Annotated[str, StringConstraints(pattern=_PRINTABLE, max_length=64)]
_Label = Annotated[str, StringConstraints(pattern=_PRINTABLE, min_length=1, max_length=64)]
_Message = Annotated[str, StringConstraints(pattern=_PRINTABLE, min_length=1, max_length=1024)]
_Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
_MAX_CAMERAS: Final = 64
_OUTBOX_DROPPED: Final = (
    "Events dropped because the on-disk outbox was full: a counter that only grows, "
    "though it may start again from 0 when the agent restarts."
)


def _unique_cameras(camera_ids: list[str]) -> None:
    if len(set(camera_ids)) != len(camera_ids):
        raise ValueError("a camera_id appears more than once")


class DeviceState(StrEnum):
    """Whether the agent is connected; ``offline`` is also its MQTT last will."""

    ONLINE = "online"
    OFFLINE = "offline"


class CameraState(StrEnum):
    """One source's state: streaming, (re)connecting, failed, or a file that has ended."""

    LIVE = "live"
    CONNECTING = "connecting"
    DOWN = "down"
    ENDED = "ended"


class CameraStatus(_Strict):
    """One camera in a device's status."""

    camera_id: IdString
    state: CameraState
    fps: float | None = Field(
        default=None, ge=0.0, le=1000.0, description="Frames processed per second, if known."
    )
    error: _Reason | None = Field(
        default=None,
        description="Why the camera is down, when known (missing, not_a_file, unopenable, "
        "no_frames, truncated, decode, disconnected); null when live or ended.",
    )


class DeviceStatus(_Strict):
    """What a device is and runs; retained on ``{root}/v1/{device_id}/status``.

    Published when the agent connects, when something in it changes, and as ``offline``
    when it stops. The MQTT last will is ``DeviceStatus.last_will(device_id)``: state
    ``offline`` and nothing else the agent would have to know at run time, so ``at`` and
    ``agent_version`` are optional (an ``online`` status must have both).
    """

    schema_version: Literal[1] = CONTRACT_VERSION
    device_id: IdString
    state: DeviceState
    at: UtcDatetime | None = Field(
        default=None,
        description="When the device said this; null in the last will, which the broker "
        "publishes at a time the device cannot know.",
    )
    agent_version: _ModelVersion | None = None
    models: dict[_ModelName, _ModelVersion] = Field(
        default_factory=dict, max_length=8, description="Model name -> version."
    )
    cameras: list[CameraStatus] = Field(default_factory=list, max_length=_MAX_CAMERAS)
    config_version: _Label | None = Field(
        default=None, description="The DesiredConfig version applied; null: the file's."
    )
    config_error: _Message | None = Field(
        default=None, description="Why the last DesiredConfig was not applied."
    )
    outbox_dropped: _Count = Field(default=0, description=_OUTBOX_DROPPED)

    @model_validator(mode="after")
    def _consistent(self) -> DeviceStatus:
        if self.state is DeviceState.ONLINE and (self.at is None or self.agent_version is None):
            raise ValueError("an online status needs at and agent_version")
        _unique_cameras([camera.camera_id for camera in self.cameras])
        return self

    @classmethod
    def last_will(cls, device_id: str) -> DeviceStatus:
        """The status the broker publishes (retained) when the device vanishes."""
        return cls(device_id=device_id, state=DeviceState.OFFLINE)


class CameraHealth(_Strict):
    """One camera's frame rates over the last health interval."""

    camera_id: IdString
    fps_processed: float = Field(ge=0.0, le=1000.0)
    fps_dropped: float = Field(
        ge=0.0, le=1000.0, description="Frames per second skipped to keep up."
    )


class LatencyMs(_Strict):
    """One pipeline stage's latency percentiles over the last health interval."""

    p50: float = Field(ge=0.0, le=3_600_000.0)
    p95: float = Field(ge=0.0, le=3_600_000.0)

    @model_validator(mode="after")
    def _ordered(self) -> LatencyMs:
        if self.p95 < self.p50:
            raise ValueError("p95 is below p50")
        return self


class DeviceHealth(_Strict):
    """Periodic measurements on ``{root}/v1/{device_id}/health`` (QoS 0, not retained)."""

    schema_version: Literal[1] = CONTRACT_VERSION
    device_id: IdString
    at: UtcDatetime
    cameras: list[CameraHealth] = Field(default_factory=list, max_length=_MAX_CAMERAS)
    latency_ms: dict[_ModelName, LatencyMs] = Field(
        default_factory=dict, max_length=32, description="Pipeline stage -> p50/p95 in ms."
    )
    outbox_depth: _Count = Field(description="Events waiting in the outbox.")
    outbox_dropped: _Count = Field(description=_OUTBOX_DROPPED)
    cpu_percent: float = Field(ge=0.0, le=100.0, description="Whole device, all cores: 0-100.")
    memory_mb: float = Field(ge=0.0, le=16_777_216.0, description="The agent's resident memory.")
    temperature_c: float | None = Field(default=None, ge=-100.0, le=200.0)

    @model_validator(mode="after")
    def _consistent(self) -> DeviceHealth:
        _unique_cameras([camera.camera_id for camera in self.cameras])
        return self


class Occupancy(_Strict):
    """How many faces one camera sees now, on ``{root}/v1/{device_id}/occupancy/{camera_id}``."""

    schema_version: Literal[1] = CONTRACT_VERSION
    device_id: IdString
    camera_id: IdString
    at: UtcDatetime
    people: int = Field(ge=0, le=10_000, description="Faces in view now.")


class DetectorSettings(_Strict):
    """Detector settings a fleet may change at run time; null: keep the device's."""

    score_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    min_face_px: int | None = Field(default=None, ge=8, le=4096)


class TrackerSettings(_Strict):
    """Tracker settings a fleet may change at run time; null: keep the device's."""

    max_missed_s: float | None = Field(default=None, gt=0.0, le=3600.0)
    min_hits: int | None = Field(default=None, ge=1, le=1000)


class EstimatorSettings(_Strict):
    """Estimator settings a fleet may change at run time; null: keep the device's."""

    tta: bool | None = None
    min_face_score: float | None = Field(default=None, ge=0.0, le=1.0)


class DesiredConfig(_Strict):
    """Run-time settings pushed to a device, retained on ``{root}/v1/{device_id}/config``.

    Every setting is optional: a missing or null one keeps the value from the device's own
    configuration file. The sections mirror the agent's TOML sections of the same names.
    The device reports the ``version`` it applied (or why it could not) in its status.
    """

    schema_version: Literal[1] = CONTRACT_VERSION
    version: _Label = Field(description="The operator's label for this configuration.")
    detector: DetectorSettings = DetectorSettings()
    tracker: TrackerSettings = TrackerSettings()
    estimator: EstimatorSettings = EstimatorSettings()
    health_interval_s: float | None = Field(default=None, ge=1.0, le=3600.0)


class Channel(StrEnum):
    """The last fixed topic level(s) after ``{root}/v1/{device_id}/``."""

    EVENTS = "events"
    STATUS = "status"
    HEALTH = "health"
    OCCUPANCY = "occupancy"
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """How a channel is used: who publishes, QoS, retain, payload, per camera or not."""

    payload: type[BaseModel]
    qos: Literal[0, 1]
    retain: bool
    from_device: bool
    per_camera: bool
    summary: str


CHANNELS: Final[Mapping[Channel, ChannelSpec]] = MappingProxyType(
    {
        Channel.EVENTS: ChannelSpec(
            PersonEvent, 1, False, True, True, "One message per tracked person, when it ends."
        ),
        Channel.STATUS: ChannelSpec(
            DeviceStatus, 1, True, True, False, "The device's state; also its last will."
        ),
        Channel.HEALTH: ChannelSpec(
            DeviceHealth, 0, False, True, False, "Periodic frame rates, latencies and load."
        ),
        Channel.OCCUPANCY: ChannelSpec(
            Occupancy, 0, False, True, True, "Faces in view now, per camera."
        ),
        Channel.CONFIG: ChannelSpec(
            DesiredConfig, 1, True, False, False, "Run-time settings pushed to the device."
        ),
    }
)


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """Any contract topic: ``{root}/v1/{device_id}/{channel}[/{camera_id}]``."""

    root: str
    device_id: str
    channel: Channel
    camera_id: str | None = None

    def __str__(self) -> str:
        base = f"{self.root}/{TOPIC_VERSION}/{self.device_id}/{self.channel.value}"
        return base if self.camera_id is None else f"{base}/{self.camera_id}"


def _checked_id(value: str, what: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError(f"{what} {value[:80]!r} is not a valid topic id")
    return value


def status_topic(root: str, device_id: str) -> str:
    """``{root}/v1/{device_id}/status``: retained DeviceStatus, and the last will."""
    return str(DeviceTopic(root, _checked_id(device_id, "device_id"), Channel.STATUS))


def health_topic(root: str, device_id: str) -> str:
    """``{root}/v1/{device_id}/health``: periodic DeviceHealth."""
    return str(DeviceTopic(root, _checked_id(device_id, "device_id"), Channel.HEALTH))


def occupancy_topic(root: str, device_id: str, camera_id: str) -> str:
    """``{root}/v1/{device_id}/occupancy/{camera_id}``: Occupancy of one camera."""
    device = _checked_id(device_id, "device_id")
    return str(DeviceTopic(root, device, Channel.OCCUPANCY, _checked_id(camera_id, "camera_id")))


def config_topic(root: str, device_id: str) -> str:
    """``{root}/v1/{device_id}/config``: retained DesiredConfig, which the device subscribes to."""
    return str(DeviceTopic(root, _checked_id(device_id, "device_id"), Channel.CONFIG))


def subscription(channel: Channel, root: str = DEFAULT_TOPIC_ROOT) -> str:
    """The wildcard filter for one channel of every device (and every camera)."""
    base = f"{root}/{TOPIC_VERSION}/+/{channel.value}"
    return f"{base}/+" if CHANNELS[channel].per_camera else base


def status_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """``{root}/v1/+/status``: every device's status."""
    return subscription(Channel.STATUS, root)


def health_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """``{root}/v1/+/health``: every device's health."""
    return subscription(Channel.HEALTH, root)


def occupancy_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """``{root}/v1/+/occupancy/+``: every camera's occupancy."""
    return subscription(Channel.OCCUPANCY, root)


def config_subscription(root: str = DEFAULT_TOPIC_ROOT) -> str:
    """``{root}/v1/+/config``: every device's desired config (for a fleet tool or the hub)."""
    return subscription(Channel.CONFIG, root)


def parse_topic(topic: str, root: str = DEFAULT_TOPIC_ROOT) -> DeviceTopic:
    """Split any contract topic into its parts, or raise ``ValueError`` saying why not."""
    prefix = f"{root}/{TOPIC_VERSION}/"
    if not topic.startswith(prefix):
        raise ValueError(f"topic {topic[:120]!r} is not under {prefix!r}")
    parts = topic[len(prefix) :].split("/")
    try:
        channel = Channel(parts[1]) if len(parts) >= 2 else None
    except ValueError:
        channel = None
    if channel is None or len(parts) != (3 if CHANNELS[channel].per_camera else 2):
        raise ValueError(f"topic {topic[:120]!r} is not a {TOPIC_VERSION} contract topic")
    camera_id = parts[2] if len(parts) == 3 else None
    if not _ID_RE.match(parts[0]) or (camera_id is not None and not _ID_RE.match(camera_id)):
        raise ValueError(f"topic {topic[:120]!r} has an invalid device or camera id")
    return DeviceTopic(root, parts[0], channel, camera_id)


_M = TypeVar("_M", bound=BaseModel)


def _parse_device_message(
    channel: Channel, model: type[_M], topic: str, payload: bytes, root: str
) -> tuple[DeviceTopic, _M]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    return _channel_topic(channel, topic, root), model.model_validate_json(payload)


def _channel_topic(channel: Channel, topic: str, root: str) -> DeviceTopic:
    where = parse_topic(topic, root)
    if where.channel is not channel:
        raise ValueError(f"topic {topic[:120]!r} is not a {channel.value} topic")
    return where


def _same_device(where: DeviceTopic, device_id: str, camera_id: str | None = None) -> None:
    if (device_id, camera_id) != (where.device_id, where.camera_id):
        raise ValueError(
            f"payload device/camera {device_id}/{camera_id} does not match "
            f"topic {where.device_id}/{where.camera_id}"
        )


def parse_status(
    topic: str,
    payload: bytes,
    root: str = DEFAULT_TOPIC_ROOT,
    bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
) -> DeviceStatus | None:
    """Validate a status message; ``None`` for an empty payload (a cleared retained status)."""
    if not payload:
        _channel_topic(Channel.STATUS, topic, root)
        return None
    where, status = _parse_device_message(Channel.STATUS, DeviceStatus, topic, payload, root)
    _same_device(where, status.device_id)
    bounds.check("at", status.at)
    return status


def parse_health(
    topic: str,
    payload: bytes,
    root: str = DEFAULT_TOPIC_ROOT,
    bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
) -> DeviceHealth:
    """Validate a health message; its device must be the topic's, its time in bounds."""
    where, health = _parse_device_message(Channel.HEALTH, DeviceHealth, topic, payload, root)
    _same_device(where, health.device_id)
    bounds.check("at", health.at)
    return health


def parse_occupancy(
    topic: str,
    payload: bytes,
    root: str = DEFAULT_TOPIC_ROOT,
    bounds: TimeBounds = DEFAULT_TIME_BOUNDS,
) -> Occupancy:
    """Validate an occupancy message; its device and camera must be the topic's, its time
    in bounds."""
    where, seen = _parse_device_message(Channel.OCCUPANCY, Occupancy, topic, payload, root)
    _same_device(where, seen.device_id, seen.camera_id)
    bounds.check("at", seen.at)
    return seen


def parse_desired_config(
    topic: str, payload: bytes, root: str = DEFAULT_TOPIC_ROOT
) -> DesiredConfig | None:
    """Validate a desired config; ``None`` for an empty payload (the retained one cleared:
    the device goes back to its file's settings)."""
    if not payload:
        _channel_topic(Channel.CONFIG, topic, root)
        return None
    return _parse_device_message(Channel.CONFIG, DesiredConfig, topic, payload, root)[1]


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
