"""API response models. Flat where the wire contract nests, so rows map one to one."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from edge_agent.contract import PersonEvent

AGE_BANDS = ("0-12", "13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown")
GENDERS = ("female", "male", "unknown")
Bucket = Literal["hour", "day"]


class Counts(BaseModel):
    """People counted in a span, split by gender and by age band (every key present)."""

    total: int = 0
    gender: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(GENDERS, 0))
    age: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(AGE_BANDS, 0))

    def add(self, gender: str, age_band: str, n: int) -> None:
        """Count ``n`` people of one gender and band."""
        self.total += n
        self.gender[gender] += n
        self.age[age_band] += n


class StatsBucket(Counts):
    """One hour or day, labelled by its start (UTC)."""

    start: datetime


class StatsResponse(BaseModel):
    """Buckets over ``[start, end)`` by each event's ``last_seen``, and their totals."""

    start: datetime
    end: datetime
    bucket: Bucket
    device_id: str | None
    camera_id: str | None
    totals: Counts
    buckets: list[StatsBucket]


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
    return_of: uuid.UUID | None = None  # the person's previous visit, when they came back
    models: dict[str, Any]
    received_at: datetime


class EventsPage(BaseModel):
    """A page of events in ``(last_seen, event_id)`` order; pass ``next_cursor`` for more."""

    events: list[EventRecord]
    next_cursor: str | None


class Device(BaseModel):
    """A device that has sent at least one event."""

    device_id: str
    first_seen: datetime
    last_seen: datetime
    last_received_at: datetime
    events: int


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
