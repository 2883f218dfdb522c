"""API request and response models. Flat where the wire contract nests, so rows map one
to one; every field the API answers is described here, so ``/docs`` documents it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from edge_agent.contract import CameraState, DeviceState, PersonEvent

AGE_BANDS = ("0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown")
GENDERS = ("female", "male", "unknown")
DIRECTIONS = ("in", "out", "none")
Bucket = Literal["minute", "hour", "day", "week", "month"]
GenderValue = Literal["female", "male", "unknown"]
AgeBand = Literal["0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown"]
DirectionValue = Literal["in", "out", "none"]
GroupBy = Literal["site", "device", "camera", "gender", "age_band", "direction"]
OccupancyGroupBy = Literal["site", "device", "camera"]
ExportFormat = Literal["csv", "json", "ndjson"]


class Counts(BaseModel):
    """People counted in a span: passers-by (everyone in view, one event each) and
    watchers (those who faced the camera), attention and dwell, first visits against
    returns, directions, and the watchers by gender and age band (every key present).

    Gender and age describe watchers: a device estimates them only from a face it saw.
    Events of 0.1 agents (schema 1) counted faces only, so each is a watcher whose
    attention is unknown."""

    total: int = Field(
        default=0, description="People counted: equals passers_by (kept for older clients)."
    )
    passers_by: int = Field(
        default=0, description="Everyone in view, face or not: one event per person."
    )
    watchers: int = Field(
        default=0,
        description="Passers-by who faced the camera (every event of a 0.1 agent is one).",
    )
    watcher_rate: float | None = Field(
        default=None, description="watchers / passers_by (4 decimals); null when none passed."
    )
    mean_attention_s: float | None = Field(
        default=None,
        description="Mean seconds watchers faced the camera, over watchers whose attention is "
        "known (not those of 0.1 agents); null when none (2 decimals).",
    )
    mean_dwell_s: float | None = Field(
        default=None, description="Mean seconds in view over all passers-by (2 decimals)."
    )
    gender: dict[str, int] = Field(
        default_factory=lambda: dict.fromkeys(GENDERS, 0),
        description="Watchers by gender (they sum to watchers); unknown: the face gave no "
        "estimate. Passers-by who did not face the camera are not in it.",
    )
    age: dict[str, int] = Field(
        default_factory=lambda: dict.fromkeys(AGE_BANDS, 0),
        description="Watchers by estimated age band (they sum to watchers).",
    )
    visitors: int = Field(
        default=0, description="First visits: events whose return_of is null (unique people)."
    )
    returns: int = Field(default=0, description="Returning visitors: total - visitors.")
    avg_age: float | None = Field(
        default=None, description="Mean estimated age of the watchers with one (2 decimals)."
    )
    avg_dwell_s: float | None = Field(
        default=None, description="Mean dwell in seconds: equals mean_dwell_s (older clients)."
    )
    direction: dict[str, int] = Field(
        default_factory=lambda: dict.fromkeys(DIRECTIONS, 0),
        description="Passers-by's crossings of the counting line; none: no line or not crossed.",
    )


class StatsGroup(Counts):
    """One group's counts, e.g. ``key = {"site": "lobby"}`` or ``{"gender": "female"}``;
    a camera is named by ``device_id`` and ``camera_id``; a site is null for cameras not
    registered at one."""

    key: dict[str, str | None]


class StatsTotals(Counts):
    """Counts, and with ``group_by`` the same per group (null without it)."""

    groups: list[StatsGroup] | None = None


class StatsBucket(StatsTotals):
    """One bucket, labelled by its start (UTC)."""

    start: datetime


class ShareInterval(BaseModel):
    """A share of the watchers (0 to 1) with its interval at the response's ``level``."""

    share: float
    low: float
    high: float


class GenderShares(BaseModel):
    """The female share of the watchers carrying P(female): ``naive`` (their mean, the
    sample's interval) and ``corrected`` for the models' known errors (docs/hub.md,
    "Population shares"), its interval also carrying the correction's uncertainty."""

    watchers: int = Field(description="Watchers whose P(female) the shares use.")
    naive: ShareInterval
    corrected: ShareInterval
    reference: str = Field(description="Where the correction was measured (set, model set).")


class AgeShares(BaseModel):
    """Each band's share of the watchers carrying band probabilities (their mean, the
    sample's interval); not corrected: no correction measured helped."""

    watchers: int
    bands: dict[str, ShareInterval]


class PopulationShares(BaseModel):
    """Shares of the watchers in the whole range and filter (not per bucket or group)."""

    level: float = Field(description="The intervals' coverage, e.g. 0.9 for 90%.")
    gender: GenderShares | None = Field(description="Null when no watcher carries P(female).")
    age: AgeShares | None = Field(description="Null when no watcher carries band probabilities.")


class StatsResponse(BaseModel):
    """Buckets over ``[start, end)`` by each event's ``last_seen``, and their totals."""

    start: datetime
    end: datetime
    bucket: Bucket
    device_id: str | None
    camera_id: str | None
    site: str | None = None
    gender: GenderValue | None = None
    age_band: AgeBand | None = None
    direction: DirectionValue | None = None
    group_by: list[GroupBy] = Field(default_factory=list)
    totals: StatsTotals
    buckets: list[StatsBucket]
    shares: PopulationShares | None = Field(
        default=None, description="With shares=true: the range's gender and age shares."
    )


class EventRecord(BaseModel):
    """One stored person event, flattened."""

    event_id: uuid.UUID
    device_id: str
    camera_id: str
    track_id: int
    first_seen: datetime
    last_seen: datetime
    dwell_s: float
    gender: str | None
    gender_confidence: float | None
    age: float | None
    age_low: float | None
    age_high: float | None
    age_confidence: float | None
    age_band: str
    direction: str | None
    crops: int
    watcher: bool = Field(
        description="The person faced the camera; true for every event of a 0.1 agent "
        "(schema 1, faces only)."
    )
    attention_s: float | None = Field(
        description="Seconds the person faced the camera; null when unknown (a 0.1 agent)."
    )
    p_female: float | None = Field(
        default=None, description="Calibrated P(female); null without a gender or agent 0.3."
    )
    return_of: uuid.UUID | None = None  # the person's previous visit, when they came back
    models: dict[str, Any]
    received_at: datetime


class EventsPage(BaseModel):
    """A page of events in ``(last_seen, event_id)`` order; pass ``next_cursor`` for more."""

    events: list[EventRecord]
    next_cursor: str | None


class CameraLive(BaseModel):
    """A camera as its device last reported it."""

    camera_id: str
    state: CameraState
    fps: float | None = None
    error: str | None = Field(
        default=None, description="Why the camera is down, as a code (truncated, missing...)."
    )


class CameraHealthOut(BaseModel):
    """One camera's frame rates in the latest health sample."""

    camera_id: str
    fps_processed: float
    fps_dropped: float


class LatencyOut(BaseModel):
    """A pipeline stage's latency percentiles (ms)."""

    p50: float
    p95: float


class HealthOut(BaseModel):
    """A device's latest health sample."""

    at: datetime
    received_at: datetime
    cpu_percent: float
    memory_mb: float
    temperature_c: float | None
    outbox_depth: int
    outbox_dropped: int
    cameras: list[CameraHealthOut]
    latency_ms: dict[str, LatencyOut]


class Device(BaseModel):
    """A device that has sent events, a status or health: its events, whether it is
    online (from its retained status and last will), what it runs, and its health."""

    device_id: str
    first_seen: datetime | None = Field(
        default=None, description="Its oldest stored event's last_seen (null: no events yet)."
    )
    last_seen: datetime | None = Field(
        default=None, description="Its newest stored event's last_seen."
    )
    last_received_at: datetime | None = Field(
        default=None, description="When the hub last stored an event of it."
    )
    events: int = 0
    state: DeviceState | Literal["unknown"] = Field(
        default="unknown", description="From its status topic; unknown: no status received."
    )
    status_at: datetime | None = Field(
        default=None, description="The status's own time; null for a last will."
    )
    status_received_at: datetime | None = None
    last_heard_at: datetime | None = Field(
        default=None, description="The newest of its event, status and health receipts."
    )
    agent_version: str | None = None
    models: dict[str, str] = Field(default_factory=dict)
    cameras: list[CameraLive] = Field(default_factory=list)
    config_version: str | None = None
    config_error: str | None = None
    outbox_dropped: int = 0
    health: HealthOut | None = None


class RecentEvents(BaseModel):
    """A camera's events from the live cache, newest first."""

    device_id: str
    camera_id: str
    events: list[PersonEvent]


class Health(BaseModel):
    """Ingest works when the database and the broker both do; Redis is optional."""

    status: Literal["ok", "degraded"]
    db: Literal["ok", "down"]
    mqtt: Literal["ok", "down"]
    redis: Literal["ok", "down", "disabled"]
    rollups: Literal["ok", "failing", "stopped"] = Field(
        default="ok",
        description="The hour/day upkeep: failing when its last round failed (see the log "
        "and hub_background_task_failures_total); stats stay exact, only slower.",
    )
    rollup_rounds: int = Field(default=0, description="Upkeep rounds completed by this process.")


# --- cameras ------------------------------------------------------------------------------

_Text = Annotated[
    str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$", min_length=1, max_length=200)
]
_Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class CountingLine(BaseModel):
    """As the agent's ``[[cameras]]`` ``line``/``in_side``: two points ``[x, y]`` in frame
    fractions (0..1, y down), directed from the first to the second; ``in_side`` is the
    side that is 'in', facing along it."""

    model_config = ConfigDict(extra="forbid")

    line: tuple[tuple[_Fraction, _Fraction], tuple[_Fraction, _Fraction]]
    in_side: Literal["left", "right"] = "left"

    @model_validator(mode="after")
    def _distinct(self) -> CountingLine:
        if self.line[0] == self.line[1]:
            raise ValueError("line needs two distinct points")
        return self


class CameraFields(BaseModel):
    """What an operator says about a camera; every field optional."""

    model_config = ConfigDict(extra="forbid")

    name: _Text | None = None
    site: _Text | None = Field(default=None, description="Statistics can be filtered by site.")
    location: _Text | None = None
    counting_line: CountingLine | None = None


class CameraCreate(CameraFields):
    """A camera to register: its device and camera ids as the device publishes them."""

    device_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    camera_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class CameraUpdate(CameraFields):
    """Fields to change; a field sent as null is cleared, a field left out is kept."""


class Camera(BaseModel):
    """A registered camera, with its state as its device last reported it."""

    device_id: str
    camera_id: str
    name: str | None
    site: str | None
    location: str | None
    counting_line: CountingLine | None
    created_at: datetime
    updated_at: datetime
    state: CameraState | None = Field(
        default=None, description="From the device's status; null when it never said."
    )
    fps: float | None = None
    device_state: DeviceState | Literal["unknown"] = "unknown"


# --- occupancy ----------------------------------------------------------------------------


class OccupancyBucket(BaseModel):
    """People in view over one bucket. Per minute the cameras' average counts are summed
    (a site's or device's occupancy); ``people_avg`` is the mean of those minutes, and
    ``people_max`` the highest minute, summing each camera's highest sample (for one
    camera: the highest count it reported)."""

    start: datetime
    key: dict[str, str | None] | None = Field(
        default=None, description="The group, with group_by; null without."
    )
    people_avg: float
    people_max: int
    minutes: int = Field(description="Minutes with at least one sample.")
    samples: int


class OccupancyResponse(BaseModel):
    """Occupancy over ``[start, end)`` at a minute's resolution (UTC)."""

    start: datetime
    end: datetime
    bucket: Bucket
    device_id: str | None
    camera_id: str | None
    site: str | None
    group_by: list[OccupancyGroupBy]
    buckets: list[OccupancyBucket]


class CurrentOccupancy(BaseModel):
    """A camera's latest occupancy sample."""

    device_id: str
    camera_id: str
    people: int
    at: datetime
    site: str | None = None
    name: str | None = None


class CurrentOccupancyResponse(BaseModel):
    """Every matching camera's latest sample and their sum."""

    source: Literal["redis", "database"]
    total: int
    cameras: list[CurrentOccupancy]


# --- reports ------------------------------------------------------------------------------


class HourCounts(Counts):
    """One UTC hour of the day."""

    hour: int = Field(ge=0, le=23)
    start: datetime


class CameraDay(BaseModel):
    """One camera's day: totals (passers-by and watchers, attention and dwell, the
    watchers' gender and age bands, first visits and returns, average age) and the 24
    hours that make them up."""

    device_id: str
    camera_id: str
    name: str | None = None
    site: str | None = None
    location: str | None = None
    totals: Counts
    hours: list[HourCounts]


class DailyReport(BaseModel):
    """Every matching camera's day (UTC), registered cameras included with zeros."""

    date: str
    start: datetime
    end: datetime
    cameras: list[CameraDay]
    shares: PopulationShares | None = Field(default=None, description="Over all its cameras.")


class LiveToken(BaseModel):
    """A token that opens ``/v1/live/events`` for ``expires_in`` seconds."""

    token: str
    expires_at: datetime
    expires_in: int
