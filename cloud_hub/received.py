"""What ingest makes of a message, as data: a dead letter or an accepted device message.

Ingest produces these (``cloud_hub.ingest.validation``); storage writes them
(``cloud_hub.storage.event_writes``, ``cloud_hub.storage.device_writes``) and the live
cache mirrors them (``cloud_hub.live.cache``). Kept apart from all three so each depends
on the data, not on the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from edge_agent.contract import DeviceHealth, DeviceStatus, Occupancy


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that failed validation, kept as a dead letter."""

    topic: str
    reason: str
    detail: str
    payload: bytes
    once: bool = False  # keep one dead letter per topic and payload (retained messages)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A status as received; ``status`` None: the retained status was cleared."""

    device_id: str
    status: DeviceStatus | None
    received_at: datetime

    @property
    def effective_at(self) -> datetime:
        """What orders statuses: the device's time, or the hub's receipt of a last will."""
        if self.status is not None and self.status.at is not None:
            return self.status.at
        return self.received_at


@dataclass(frozen=True, slots=True)
class HealthSample:
    """A health message and when it arrived."""

    health: DeviceHealth
    received_at: datetime


Telemetry = StatusUpdate | HealthSample | Occupancy


@dataclass(slots=True)
class TelemetryBatch:
    """The non-event messages of one ingest batch, in arrival order per kind."""

    statuses: list[StatusUpdate] = field(default_factory=list)
    health: list[HealthSample] = field(default_factory=list)
    occupancy: list[Occupancy] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.statuses or self.health or self.occupancy)
