"""Recognising a person who comes back: one face embedding per person, kept on the device.

When a track ends, its best crop's embedding is compared with the people who left this
camera (or, if configured, any camera of this device) within the return window. A match
makes the new event a return (``return_of`` names the earlier event), so the hub counts
unique visitors and returns apart. Embeddings stay in this process's memory, bounded by
``max_people`` and the window; they are never published or written to disk.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import ReturnsConfig


class Embedder(Protocol):
    """Turns face crops with their dlib-5 landmarks into unit-length embeddings."""

    def embed(
        self, images: Sequence[NDArray[np.uint8]], points: Sequence[NDArray[np.float32]]
    ) -> NDArray[np.float32]: ...


@dataclass(slots=True, eq=False)  # identity: remove() must not compare arrays
class Departure:
    """Someone who left a camera's view, remembered for the return window."""

    embedding: NDArray[np.float32]
    camera_id: str
    left_at: datetime
    event_id: uuid.UUID


class ReturnMatcher:
    """The device's memory of recent departures. Used from one thread at a time (the
    estimation worker), so it takes no lock."""

    def __init__(self, config: ReturnsConfig) -> None:
        self.config = config
        self._people: deque[Departure] = deque(maxlen=config.max_people)
        self.returns = 0  # events marked as a return, for metrics

    def __len__(self) -> int:
        return len(self._people)

    def match(
        self, embedding: NDArray[np.float32], camera_id: str, arrived_at: datetime
    ) -> Departure | None:
        """The most similar person who left before ``arrived_at`` and within the window,
        if similar enough; forgets whoever left longer ago than the window."""
        window = timedelta(seconds=self.config.window_s)
        while self._people and self._people[0].left_at < arrived_at - window:
            self._people.popleft()
        candidates = [
            person
            for person in self._people
            if person.left_at <= arrived_at
            and (self.config.across_cameras or person.camera_id == camera_id)
        ]
        if not candidates:
            return None
        similarity = np.stack([p.embedding for p in candidates]) @ embedding
        best = int(np.argmax(similarity))
        return candidates[best] if similarity[best] >= self.config.threshold else None

    def remember(
        self,
        embedding: NDArray[np.float32],
        camera_id: str,
        left_at: datetime,
        event_id: uuid.UUID,
        previous: Departure | None = None,
    ) -> None:
        """Keep a departure; a returning person replaces their earlier entry, so they
        are matched on their latest look and the window runs from their latest visit."""
        if previous is not None:
            with contextlib.suppress(ValueError):  # already forgotten
                self._people.remove(previous)
            self.returns += 1
        self._people.append(Departure(embedding, camera_id, left_at, event_id))
