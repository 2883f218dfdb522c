"""What a device says about itself beside its events, and the settings it is sent.

Status (retained, also the MQTT last will), periodic health, occupancy per camera, and
the desired configuration a fleet pushes (retained on the device's ``config`` topic).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Final, Literal

from pydantic import Field, model_validator

from edge_agent.contract.fields import (
    CONTRACT_VERSION,
    Count,
    Label,
    Message,
    ModelName,
    ModelVersion,
    ModelVersions,
    Reason,
    StrictModel,
)
from edge_agent.contract.ids import IdString
from edge_agent.contract.times import UtcDatetime

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


class CameraStatus(StrictModel):
    """One camera in a device's status."""

    camera_id: IdString
    state: CameraState
    fps: float | None = Field(
        default=None, ge=0.0, le=1000.0, description="Frames processed per second, if known."
    )
    error: Reason | None = Field(
        default=None,
        description="Why the camera is down, when known (missing, not_a_file, unopenable, "
        "no_frames, truncated, decode, disconnected); null when live or ended.",
    )


class DeviceStatus(StrictModel):
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
    agent_version: ModelVersion | None = None
    models: ModelVersions = Field(default_factory=dict)
    cameras: list[CameraStatus] = Field(default_factory=list, max_length=_MAX_CAMERAS)
    config_version: Label | None = Field(
        default=None, description="The DesiredConfig version applied; null: the file's."
    )
    config_error: Message | None = Field(
        default=None, description="Why the last DesiredConfig was not applied."
    )
    outbox_dropped: Count = Field(default=0, description=_OUTBOX_DROPPED)

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


class CameraHealth(StrictModel):
    """One camera's frame rates over the last health interval."""

    camera_id: IdString
    fps_processed: float = Field(ge=0.0, le=1000.0)
    fps_dropped: float = Field(
        ge=0.0, le=1000.0, description="Frames per second skipped to keep up."
    )


class LatencyMs(StrictModel):
    """One pipeline stage's latency percentiles over the last health interval."""

    p50: float = Field(ge=0.0, le=3_600_000.0)
    p95: float = Field(ge=0.0, le=3_600_000.0)

    @model_validator(mode="after")
    def _ordered(self) -> LatencyMs:
        if self.p95 < self.p50:
            raise ValueError("p95 is below p50")
        return self


class DeviceHealth(StrictModel):
    """Periodic measurements on ``{root}/v1/{device_id}/health`` (QoS 0, not retained)."""

    schema_version: Literal[1] = CONTRACT_VERSION
    device_id: IdString
    at: UtcDatetime
    cameras: list[CameraHealth] = Field(default_factory=list, max_length=_MAX_CAMERAS)
    latency_ms: dict[ModelName, LatencyMs] = Field(
        default_factory=dict, max_length=32, description="Pipeline stage -> p50/p95 in ms."
    )
    outbox_depth: Count = Field(description="Events waiting in the outbox.")
    outbox_dropped: Count = Field(description=_OUTBOX_DROPPED)
    cpu_percent: float = Field(ge=0.0, le=100.0, description="Whole device, all cores: 0-100.")
    memory_mb: float = Field(ge=0.0, le=16_777_216.0, description="The agent's resident memory.")
    temperature_c: float | None = Field(default=None, ge=-100.0, le=200.0)

    @model_validator(mode="after")
    def _consistent(self) -> DeviceHealth:
        _unique_cameras([camera.camera_id for camera in self.cameras])
        return self


class Occupancy(StrictModel):
    """How many faces one camera sees now, on ``{root}/v1/{device_id}/occupancy/{camera_id}``."""

    schema_version: Literal[1] = CONTRACT_VERSION
    device_id: IdString
    camera_id: IdString
    at: UtcDatetime
    people: int = Field(ge=0, le=10_000, description="Faces in view now.")


class DailyCount(StrictModel):
    """People one camera has seen since local midnight, retained on
    ``{root}/v1/{device_id}/counts/{camera_id}``.

    One person event is one person; the count starts again at 0 when the device's local
    date changes (``day``), so a consumer can treat it as a meter that resets daily.
    """

    schema_version: Literal[1] = CONTRACT_VERSION
    device_id: IdString
    camera_id: IdString
    day: date = Field(description="The device's local date the count is for.")
    at: UtcDatetime
    people: int = Field(
        ge=0, le=100_000_000, description="Person events since local midnight on that day."
    )


class DetectorSettings(StrictModel):
    """Detector settings a fleet may change at run time; null: keep the device's."""

    score_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    min_face_px: int | None = Field(default=None, ge=8, le=4096)


class TrackerSettings(StrictModel):
    """Tracker settings a fleet may change at run time; null: keep the device's."""

    max_missed_s: float | None = Field(default=None, gt=0.0, le=3600.0)
    min_hits: int | None = Field(default=None, ge=1, le=1000)


class EstimatorSettings(StrictModel):
    """Estimator settings a fleet may change at run time; null: keep the device's."""

    tta: bool | None = None
    min_face_score: float | None = Field(default=None, ge=0.0, le=1.0)


class DesiredConfig(StrictModel):
    """Run-time settings pushed to a device, retained on ``{root}/v1/{device_id}/config``.

    Every setting is optional: a missing or null one keeps the value from the device's own
    configuration file. The sections mirror the agent's TOML sections of the same names.
    The device reports the ``version`` it applied (or why it could not) in its status.
    """

    schema_version: Literal[1] = CONTRACT_VERSION
    version: Label = Field(description="The operator's label for this configuration.")
    detector: DetectorSettings = DetectorSettings()
    tracker: TrackerSettings = TrackerSettings()
    estimator: EstimatorSettings = EstimatorSettings()
    health_interval_s: float | None = Field(default=None, ge=1.0, le=3600.0)
