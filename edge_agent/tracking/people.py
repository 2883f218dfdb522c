"""Everyone in view, with or without a face.

People come from the person detector and its tracker (``person_tracker.py``); faces are
attached to the person whose head they are (``faces_on_people.py``), between person
detections too, on the motion-predicted boxes. A face no person box holds (a close-up the
person detector missed, a person it has not confirmed yet) is followed by the face
tracker (``tracker.py``) and counts as a person of its own, unless a person box takes it
over later: then the person inherits its crops and attention, and it is counted once.
"""

from __future__ import annotations

from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import PeopleConfig, TrackerConfig
from edge_agent.contract import Direction
from edge_agent.tracking.counting_line import CountingLine
from edge_agent.tracking.faces_on_people import (
    HEAD_DOWN,
    UPPER_PART,
    assign_faces,
    frontal,
    observe_face,
)
from edge_agent.tracking.person_tracker import PersonTrack, PersonTracker
from edge_agent.tracking.tracker import IouTracker, Track, face_quality, offer_crop
from edge_agent.vision.detections import Detections, FaceCrop, iou_matrix

# Face-only people get ids from here, so they never collide with person track ids.
FACE_ONLY_FIRST_ID: Final = 1 << 40
# Faces are looked for in one region around every person's head; when that region would
# cover more than this share of the frame, the whole frame is cheaper to think about.
FULL_FRAME_SHARE: Final = 0.5


class Person(Protocol):
    """What an ended track gives its event, whichever tracker followed it."""

    track_id: int
    first_seen: float
    last_seen: float
    crops: list[FaceCrop]
    faces_seen: int
    frontal_seen: int
    attention_s: float

    @property
    def direction(self) -> Direction | None: ...


def face_only(person: Person) -> bool:
    """Followed by its face alone (no person box ever held it)."""
    return isinstance(person, Track)


class PeopleTracker:
    """One camera's people and faces; ``people_step`` on person-detection frames,
    ``faces_step`` on face-detection frames, both in frame order."""

    def __init__(
        self,
        people: PeopleConfig,
        faces: TrackerConfig,
        min_face_px: int,
        line: CountingLine | None = None,
    ) -> None:
        self.people = PersonTracker(people, line) if people.enabled else None
        self.faces = IouTracker(faces, min_face_px, line, first_id=FACE_ONLY_FIRST_ID)
        self._last_faces_at: float | None = None

    def apply_settings(self, people: PeopleConfig, faces: TrackerConfig, min_face_px: int) -> None:
        """New settings from the next frame on; the tracks stay."""
        if self.people is not None:
            self.people.apply_settings(people)
        self.faces.apply_settings(faces, min_face_px)

    def people_step(
        self, detections: Detections | None, now: float, frame_size: tuple[int, int]
    ) -> list[Person]:
        """A person-detection frame (``None``: the scene did not move, detection was
        skipped); returns the people who just left."""
        if self.people is None:
            return []
        if detections is None:
            self.people.hold(now)
            return []
        return list(self.people.update(detections, now, frame_size))

    def anyone(self) -> bool:
        """Someone is in view (or about to be confirmed): faces are worth looking for."""
        return bool(self.faces.active) or (self.people is not None and bool(self.people.active))

    def face_region(
        self, now: float, frame_size: tuple[int, int]
    ) -> tuple[float, float, float, float] | None:
        """Where the heads of the people in view are (frame fractions, one region around
        all of them), or ``None`` for the whole frame."""
        if self.people is None or self.faces.active:
            return None
        predicted = self.people.predicted(now)
        if not predicted:
            return None
        width, height = frame_size
        boxes = np.stack([box for _, box in predicted]).astype(np.float64)
        box_w = boxes[:, 2] - boxes[:, 0]
        box_h = boxes[:, 3] - boxes[:, 1]
        pad = 0.25 * box_w
        x1 = max(0.0, float(np.min(boxes[:, 0] - pad)) / width)
        x2 = min(1.0, float(np.max(boxes[:, 2] + pad)) / width)
        y1 = max(0.0, float(np.min(boxes[:, 1] - HEAD_DOWN * box_h - pad)) / height)
        y2 = min(1.0, float(np.max(boxes[:, 1] + (UPPER_PART + HEAD_DOWN) * box_h)) / height)
        if x2 <= x1 or y2 <= y1 or (x2 - x1) * (y2 - y1) > FULL_FRAME_SHARE:
            return None
        return x1, y1, x2, y2

    def faces_step(self, faces: Detections, now: float, rgb: NDArray[np.uint8]) -> list[Person]:
        """A face-detection frame: faces go to their people, the rest to the face
        tracker; returns the face-only people who just left."""
        step = 0.0 if self._last_faces_at is None else now - self._last_faces_at
        self._last_faces_at = now
        is_frontal = frontal(faces)
        quality = face_quality(faces) if len(faces) else np.zeros(0, np.float32)
        owner = np.full(len(faces), -1, np.intp)
        # Faces go to confirmed people only: a tentative box may yet vanish, and the face
        # tracker keeps the face meanwhile (merged into the person once confirmed).
        predicted = []
        if self.people is not None:
            min_hits = self.people.config.min_hits
            predicted = [(t, box) for t, box in self.people.predicted(now) if t.hits >= min_hits]
        if predicted:
            owner = assign_faces(np.stack([box for _, box in predicted]), faces)
        for i in np.flatnonzero(owner >= 0):
            person = predicted[int(owner[i])][0]
            self._take_over_face_tracks(person, faces.boxes[i])
            observe_face(person, bool(is_frontal[i]), step)
            if faces.widths[i] >= self.faces.min_face_px:
                offer_crop(
                    person.crops,
                    rgb,
                    faces,
                    int(i),
                    float(quality[i]),
                    self.faces.config.best_crops,
                )
        alone = np.flatnonzero(owner < 0)
        ended: list[Person] = list(self.faces.update(faces[alone], now, rgb))
        for track, index in self.faces.matched:
            observe_face(track, bool(is_frontal[alone[index]]), step)
        return ended

    def _take_over_face_tracks(self, person: PersonTrack, face_box: NDArray[np.float32]) -> None:
        """A face-only track at this face's place was this person all along: merge it."""
        if not self.faces.active:
            return
        boxes = np.stack([t.box for t in self.faces.active]).astype(np.float32)
        overlaps = iou_matrix(boxes, face_box.reshape(1, 4))[:, 0]
        for track, overlap in zip(list(self.faces.active), overlaps, strict=True):
            if overlap < self.faces.config.iou_match:
                continue
            person.first_seen = min(person.first_seen, track.first_seen)
            person.faces_seen += track.faces_seen
            person.frontal_seen += track.frontal_seen
            person.attention_s += track.attention_s
            person.face_track_ids.add(track.track_id)
            merged = sorted(person.crops + track.crops, key=lambda c: -c.quality)
            person.crops[:] = merged[: self.faces.config.best_crops]
            self.faces.remove(track)

    def in_view(self) -> int:
        """Confirmed people in view now: person tracks and face-only tracks."""
        min_hits = self.faces.config.min_hits
        faces = sum(1 for track in self.faces.active if track.hits >= min_hits)
        return faces + (self.people.in_view() if self.people is not None else 0)

    def finish(self) -> list[Person]:
        """The stream ended: everyone in view has left."""
        people: list[Person] = list(self.people.finish()) if self.people is not None else []
        return people + list(self.faces.finish())
