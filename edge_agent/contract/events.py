"""The person event: one message per tracked person, published when the track ends.

No image and no embedding ever leave the device: an event holds times, whether the
person looked at the camera and for how long, a gender and an age estimate with their
confidence (only when a usable face was seen), the direction a counting line saw, and,
for a person who came back, the id of their previous visit.

Schema 2 (agent 0.2) counts every person in view, face or not, and adds ``watcher`` and
``attention_s``. Schema 1 (agent 0.1) counted faces only: each such event is a person
who faced the camera, with attention unknown (``None``). Receivers accept both;
:func:`event_watcher` reads either.
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from edge_agent.contract.fields import ModelVersions, StrictModel
from edge_agent.contract.ids import IdString
from edge_agent.contract.times import UtcDatetime


class Gender(StrEnum):
    """The two classes the gender models distinguish."""

    FEMALE = "female"
    MALE = "male"


class Direction(StrEnum):
    """Which way a person crossed the camera's counting line."""

    IN = "in"
    OUT = "out"


class GenderEstimate(StrictModel):
    """One gender per person, with the aggregated probability of that gender."""

    value: Gender
    confidence: float = Field(ge=0.5, le=1.0)


class AgeEstimate(StrictModel):
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


# The age bands everyone reports in: the hub's statistics, the event's band probabilities
# (``PersonEvent.age_bands``) and the population shares. Each band holds ages from its
# lower bound up to, not including, the next one's; the last is open.
AGE_BAND_LOWER_BOUNDS: Final = (0, 13, 18, 25, 35, 45, 55, 65)
AGE_BAND_NAMES: Final = ("0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
# How far a band distribution may sum from 1 after each value's rounding to 3 decimals.
_BAND_SUM_SLACK: Final = 0.01

# The person event's own schema version (other payloads stay at CONTRACT_VERSION, and
# the topics at v1: schema 2 adds fields that a 0.2 hub reads, see docs/mqtt-contract.md).
EVENT_SCHEMA_VERSION: Final = 2
# Attention may exceed dwell by at most one frame interval's rounding.
_ATTENTION_SLACK_S: Final = 0.5


class PersonEvent(StrictModel):
    """One tracked person, published once when the track ends. No image, no embedding."""

    schema_version: Literal[1, 2] = EVENT_SCHEMA_VERSION
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
    watcher: bool | None = Field(
        default=None,
        description="Schema 2 (required there): the person faced the camera (a frontal "
        "face for at least the device's watcher_min_s). Absent in schema 1, whose events "
        "were all people who showed a face.",
    )
    attention_s: float | None = Field(
        default=None,
        ge=0.0,
        le=7 * 24 * 3600.0,
        description="Schema 2 (required there): seconds with a frontal face, at most dwell_s.",
    )
    p_female: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The calibrated probability that the person is female (the gender "
        "estimate's distribution, before it is rounded to one label), so a receiver can "
        "correct population shares for the models' known errors. Only with a gender; "
        "optional (agents before 0.3 leave it out).",
    )
    age_bands: list[float] | None = Field(
        default=None,
        min_length=len(AGE_BAND_NAMES),
        max_length=len(AGE_BAND_NAMES),
        description="The age distribution's probability per age band, in the order "
        f"{', '.join(AGE_BAND_NAMES)}; sums to 1. Only with an age; optional.",
    )
    return_of: uuid.UUID | None = Field(
        default=None,
        description="Set when the device recognised this person as coming back within its "
        "return window: the event_id of their previous visit. Unique visitors are the events "
        "without it. Recognition uses a face embedding that never leaves the device.",
    )
    models: ModelVersions = Field(default_factory=dict)

    @model_validator(mode="after")
    def _times(self) -> PersonEvent:
        # Whether the times are plausible at all is the receiver's call (TimeBounds, in
        # parse_event); the model only checks that they are consistent.
        if self.last_seen < self.first_seen:
            raise ValueError("last_seen is before first_seen")
        if self.schema_version == 1:
            if self.watcher is not None or self.attention_s is not None:
                raise ValueError("watcher and attention_s are schema 2 fields")
        elif self.watcher is None or self.attention_s is None:
            raise ValueError("a schema 2 event carries watcher and attention_s")
        elif self.attention_s > self.dwell_s + _ATTENTION_SLACK_S:
            raise ValueError("attention_s exceeds dwell_s")
        self._distributions()
        return self

    def _distributions(self) -> None:
        """The shares' inputs agree with the estimates they come from."""
        if self.p_female is not None:
            if self.gender is None:
                raise ValueError("p_female comes with a gender estimate")
            if (self.p_female >= 0.5) != (self.gender.value == Gender.FEMALE) and not (
                self.p_female == 0.5
            ):
                raise ValueError("p_female disagrees with the gender estimate")
        if self.age_bands is not None:
            if self.age is None:
                raise ValueError("age_bands come with an age estimate")
            if any(not 0.0 <= p <= 1.0 for p in self.age_bands):
                raise ValueError("every age band probability lies in [0, 1]")
            if abs(sum(self.age_bands) - 1.0) > _BAND_SUM_SLACK:
                raise ValueError("the age band probabilities sum to 1")


def event_watcher(event: PersonEvent) -> bool:
    """Whether the person faced the camera; a schema 1 event was always a face."""
    return True if event.watcher is None else event.watcher


# A person event as one flat row, for CSV files and tables: the nested gender and age
# become columns, in this order. `edge-agent analyze --format csv` writes exactly these;
# the hub's exports (`cloud_hub.queries`) add what only the hub knows, the age band and
# when the event was received.
FLAT_EVENT_FIELDS: Final = (
    "event_id",
    "device_id",
    "camera_id",
    "track_id",
    "first_seen",
    "last_seen",
    "dwell_s",
    "gender",
    "gender_confidence",
    "age",
    "age_low",
    "age_high",
    "age_confidence",
    "direction",
    "crops",
    "watcher",
    "attention_s",
    "p_female",
    "return_of",
    "models",
)


def flat_event(event: PersonEvent) -> dict[str, Any]:
    """The event as one row of :data:`FLAT_EVENT_FIELDS`: JSON values, ``None`` where absent."""
    gender, age = event.gender, event.age
    return {
        "event_id": str(event.event_id),
        "device_id": event.device_id,
        "camera_id": event.camera_id,
        "track_id": event.track_id,
        "first_seen": event.first_seen.isoformat(),
        "last_seen": event.last_seen.isoformat(),
        "dwell_s": event.dwell_s,
        "gender": gender.value.value if gender else None,
        "gender_confidence": gender.confidence if gender else None,
        "age": age.value if age else None,
        "age_low": age.low if age else None,
        "age_high": age.high if age else None,
        "age_confidence": age.confidence if age else None,
        "direction": event.direction.value if event.direction else None,
        "crops": event.crops,
        "watcher": event_watcher(event),
        "attention_s": event.attention_s,
        "p_female": event.p_female,
        "return_of": str(event.return_of) if event.return_of else None,
        "models": dict(event.models),
    }


def csv_cell(value: Any) -> Any:
    """A flat row's value as a CSV cell: empty for ``None``, compact JSON for the models."""
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return "" if value is None else value
