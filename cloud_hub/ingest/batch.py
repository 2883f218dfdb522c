"""One ingest batch: the messages as the network thread handed them over, and what
validation made of them. The receive loop (``cloud_hub.ingest.consumer``) fills it, the
writer (``cloud_hub.ingest.writer``) stores and acknowledges it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cloud_hub.received import Rejected, TelemetryBatch
from edge_agent.contract import PersonEvent


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the network thread handed it over."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    session: int  # Acks are only valid on the connection that delivered the message.
    received_at: float = field(default_factory=time.time)  # a datetime only where needed


@dataclass(slots=True)
class PreparedBatch:
    """A validated batch, ready to be written."""

    batch: list[Received]
    events: list[PersonEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    other: TelemetryBatch = field(default_factory=TelemetryBatch)
