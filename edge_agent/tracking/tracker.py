"""Keeps one id per face per camera across frames and knows when a person has left.

IoU matching (greedy, best overlap first) is enough at the frame rates and face sizes of
audience cameras; a track becomes a person only after ``min_hits`` detections, which
filters one-frame false positives, and ends when unseen for ``max_missed_s``. Each
track keeps its few best face crops, so the expensive networks run once per person, and
its face centre's first and last positions (normalised by the frame size) plus, with a
counting line, the few numbers that tell which way it crossed (``counting_line.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import TrackerConfig
from edge_agent.contract import Direction
from edge_agent.tracking.counting_line import CountingLine, LineCrossing, Point
from edge_agent.vision.detections import (
    LEFT_EYE,
    NOSE_TIP,
    RIGHT_EYE,
    Detections,
    FaceCrop,
    iou_matrix,
)


def face_quality(detections: Detections) -> NDArray[np.float32]:
    """Size x frontalness x detector score, per face; higher is a better crop.

    Frontalness comes from the keypoints: the nose tip sits midway between the eyes
    when the face looks at the camera and drifts toward one eye as it turns.
    """
    kp = detections.keypoints
    eye_mid = (kp[:, RIGHT_EYE, 0] + kp[:, LEFT_EYE, 0]) / 2.0
    eye_dist = np.maximum(np.abs(kp[:, LEFT_EYE, 0] - kp[:, RIGHT_EYE, 0]), 1.0)
    frontal = 1.0 - np.minimum(1.0, 2.0 * np.abs(kp[:, NOSE_TIP, 0] - eye_mid) / eye_dist)
    size = np.sqrt(np.maximum(detections.widths, 1.0))
    quality: NDArray[np.float32] = (size * (0.2 + frontal) * detections.scores).astype(np.float32)
    return quality


def offer_crop(
    crops: list[FaceCrop],
    crop_source: NDArray[np.uint8],
    detections: Detections,
    i: int,
    quality: float,
    keep: int,
) -> None:
    """Keep face ``i`` in ``crops`` (best first) if it is among the ``keep`` best so far."""
    if len(crops) >= keep and quality <= crops[-1].quality:
        return
    crops.append(FaceCrop.cut(crop_source, detections.boxes[i], detections.keypoints[i], quality))
    crops.sort(key=lambda c: -c.quality)
    del crops[keep:]


@dataclass(slots=True)
class Track:
    """One face followed through time on one camera."""

    track_id: int
    first_seen: float
    last_seen: float
    box: NDArray[np.float32]
    hits: int = 1
    crops: list[FaceCrop] = field(default_factory=list)
    first_centre: Point | None = None  # face centre at first sight, frame fractions
    last_centre: Point | None = None  # ... and at last sight
    crossing: LineCrossing | None = None  # with a counting line: its side history
    faces_seen: int = 0  # detections (faces_on_people.observe_face)
    frontal_seen: int = 0  # ... that looked at the camera
    attention_s: float = 0.0  # time with a frontal face

    def move_to(self, centre: Point) -> None:
        """Record the face centre (normalised) of this frame."""
        if self.first_centre is None:
            self.first_centre = centre
        self.last_centre = centre
        if self.crossing is not None:
            self.crossing.observe(centre)

    @property
    def direction(self) -> Direction | None:
        """Which way the track crossed the counting line; None without a net crossing."""
        return None if self.crossing is None else self.crossing.direction()

    def offer(
        self,
        crop_source: NDArray[np.uint8],
        detections: Detections,
        i: int,
        quality: float,
        keep: int,
    ) -> None:
        """Keep the face as a crop if it is among the ``keep`` best seen so far."""
        offer_crop(self.crops, crop_source, detections, i, quality, keep)


class IouTracker:
    """Greedy IoU tracker; ``update`` once per processed frame."""

    def __init__(
        self,
        config: TrackerConfig,
        min_face_px: int = 24,
        line: CountingLine | None = None,
        first_id: int = 1,
    ) -> None:
        self.config = config
        self.min_face_px = min_face_px
        self.line = line
        self.active: list[Track] = []
        # (track, detection index) for every face of the last update, matched or new.
        self.matched: list[tuple[Track, int]] = []
        self._next_id = first_id

    def apply_settings(self, config: TrackerConfig, min_face_px: int) -> None:
        """New settings from the next frame on (a live config); the tracks stay."""
        self.config = config
        self.min_face_px = min_face_px

    def update(self, detections: Detections, now: float, rgb: NDArray[np.uint8]) -> list[Track]:
        """Match this frame's faces to tracks; return confirmed tracks that just ended."""
        cfg = self.config
        boxes = np.stack([t.box for t in self.active]) if self.active else np.zeros((0, 4))
        overlaps = iou_matrix(boxes.astype(np.float32), detections.boxes)
        quality = face_quality(detections)
        height, width = rgb.shape[:2]
        centres = (detections.boxes[:, :2] + detections.boxes[:, 2:]) / 2.0 / (width, height)
        matched_tracks: set[int] = set()
        matched_faces: set[int] = set()
        self.matched = []
        for flat in np.argsort(-overlaps, axis=None):
            t_i, d_i = divmod(int(flat), len(detections))
            if overlaps[t_i, d_i] < cfg.iou_match:
                break
            if t_i in matched_tracks or d_i in matched_faces:
                continue
            matched_tracks.add(t_i)
            matched_faces.add(d_i)
            self._extend(self.active[t_i], detections, d_i, now, rgb, float(quality[d_i]))
            self.active[t_i].move_to(_point(centres[d_i]))
            self.matched.append((self.active[t_i], d_i))
        for d_i in range(len(detections)):
            if d_i not in matched_faces:
                track = Track(self._next_id, now, now, detections.boxes[d_i])
                if self.line is not None:
                    track.crossing = self.line.follow()
                track.move_to(_point(centres[d_i]))
                self._next_id += 1
                self._keep_crop(track, detections, d_i, rgb, float(quality[d_i]))
                self.active.append(track)
                self.matched.append((track, d_i))
        ended = [t for t in self.active if now - t.last_seen > cfg.max_missed_s]
        self.active = [t for t in self.active if now - t.last_seen <= cfg.max_missed_s]
        return [t for t in ended if t.hits >= cfg.min_hits]

    def remove(self, track: Track) -> None:
        """Forget a track (another tracker took the person over)."""
        self.active = [t for t in self.active if t is not track]

    def finish(self) -> list[Track]:
        """End every track (the stream is over); return the confirmed ones."""
        ended, self.active = self.active, []
        return [t for t in ended if t.hits >= self.config.min_hits]

    def _extend(
        self,
        track: Track,
        detections: Detections,
        i: int,
        now: float,
        rgb: NDArray[np.uint8],
        quality: float,
    ) -> None:
        track.box = detections.boxes[i]
        track.last_seen = now
        track.hits += 1
        self._keep_crop(track, detections, i, rgb, quality)

    def _keep_crop(
        self, track: Track, detections: Detections, i: int, rgb: NDArray[np.uint8], quality: float
    ) -> None:
        if detections.widths[i] >= self.min_face_px:
            track.offer(rgb, detections, i, quality, self.config.best_crops)


def _point(xy: NDArray[np.float64]) -> Point:
    return float(xy[0]), float(xy[1])
