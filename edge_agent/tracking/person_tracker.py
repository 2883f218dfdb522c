"""One id per person per camera, ByteTrack-style, with a motion model between detections.

Person detection runs at a few frames per second (``PeopleConfig.detect_fps``), so a
walker moves a good part of a box width between two detections, and two people who
overlap (one entering behind another, two crossing) must not swap or merge. Each track
carries a constant-velocity Kalman filter on its box (``kalman.py``, stepped by stream
seconds), and association follows ByteTrack (Zhang et al., 2022):

1. confident boxes (``score >= high_score``) against every track, confirmed, tentative
   or lost, by IoU with the box each track predicts for now;
2. the weak boxes (``score_threshold <= score < high_score``, often a half-occluded
   person) against the confirmed tracks left over: they continue a person, never start
   one, nor confirm a tentative one;
3. tentative tracks left over against the confident boxes left over, the track's box
   first moved toward the box by up to one standard deviation of its predicted centre:
   a track seen once has no velocity yet, and at 5 detections/s a brisk walker moves
   past ``iou_match`` before the filter knows it walks;
4. confident boxes still unmatched start tentative tracks. A tentative track missed twice
   in a row is dropped (counted in ``discarded``; ByteTrack drops it at the first miss,
   but a detector that misses one person in ten at 5/s would then restart one walker in
   four, late for dwell and for the counting line); a confirmed one (``min_hits``
   detections) is lost, predicted on, and ends after ``max_missed_s`` unmatched.

Each stage is a one-to-one assignment maximising the summed IoU over pairs at or above
``iou_match`` (Hungarian method, below: a few dozen boxes at most, NumPy only).

Why not a library: ``bytetracker`` (PyPI) pins torch, scipy and lap; ``supervision``'s
ByteTrack pulls scipy, matplotlib, av, pillow and requests; roboflow's ``trackers`` adds
supervision, scipy and opencv-python (clashing with the headless OpenCV the device has);
``boxmot`` needs torch, torchvision, timm and pandas; ``filterpy`` needs scipy and
matplotlib. Only ``lap`` (LAPJV, numpy alone) would fit, and the matrices here are too
small for it to matter. The device image carries none of these; this file and
``kalman.py`` are the whole tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import PeopleConfig
from edge_agent.contract import Direction
from edge_agent.tracking.counting_line import CountingLine, LineCrossing, Point
from edge_agent.tracking.kalman import BoxFilter
from edge_agent.vision.detections import Detections, FaceCrop, iou_matrix

_NO_MATCH: Final = 1e6  # assignment cost of a pair below the IoU threshold


@dataclass(slots=True, eq=False)
class PersonTrack:
    """One person followed through time on one camera (compared by identity).

    ``box`` is the filtered box at the last matched detection; ``first_foot`` and
    ``last_foot`` are its bottom-centre at first and last match, in frame fractions (the
    foot point is where the person stands, so it is what crosses a floor line).
    """

    track_id: int
    first_seen: float
    last_seen: float
    box: NDArray[np.float32]
    score: float
    first_foot: Point
    last_foot: Point
    _motion: BoxFilter = field(repr=False)
    hits: int = 1
    crossing: LineCrossing | None = None  # with a counting line: the foot point's sides
    # Filled by the pipeline from the faces assigned to this person.
    crops: list[FaceCrop] = field(default_factory=list)
    faces_seen: int = 0
    frontal_seen: int = 0
    attention_s: float = 0.0
    face_track_ids: set[int] = field(default_factory=set)
    _matched: bool = field(default=True, repr=False)  # matched at the last update

    @property
    def direction(self) -> Direction | None:
        """Which way the foot point crossed the counting line; None without a net crossing."""
        return None if self.crossing is None else self.crossing.direction()

    @property
    def lost(self) -> bool:
        """Unmatched at the last detection step (predicted, not seen)."""
        return not self._matched

    def _observe(
        self, box: NDArray[np.floating], score: float, now: float, frame_size: tuple[int, int]
    ) -> None:
        self._motion.update(box, now)
        self.box = self._motion.box
        self.score = score
        self.last_seen = now
        self.hits += 1
        self.last_foot = foot = _foot(self.box, frame_size)
        self._matched = True
        if self.crossing is not None:
            self.crossing.observe(foot)


class PersonTracker:
    """ByteTrack association over Kalman-predicted boxes; ``update`` once per detection."""

    def __init__(self, config: PeopleConfig, line: CountingLine | None = None) -> None:
        self.config = config
        self.line = line
        self.active: list[PersonTrack] = []  # replaced, never mutated in place
        self.discarded = 0  # tentative tracks dropped before they counted
        self._next_id = 1

    def apply_settings(self, config: PeopleConfig) -> None:
        """New settings from the next update on (a live config); the tracks stay."""
        self.config = config

    def update(
        self, detections: Detections, now: float, frame_size: tuple[int, int]
    ) -> list[PersonTrack]:
        """Match one detection step's boxes to tracks; return confirmed tracks that ended."""
        cfg = self.config
        # Unseen for too long before this detection: gone, whatever this frame shows (a
        # newcomer on the same spot is someone else).
        expired = [t for t in self.active if now - t.last_seen > cfg.max_missed_s]
        tracks = [t for t in self.active if now - t.last_seen <= cfg.max_missed_s]
        ended: list[PersonTrack] = [t for t in expired if t.hits >= cfg.min_hits]
        self.discarded += len(expired) - len(ended)
        for track in tracks:
            track._motion.predict(now)
        keep = detections.scores >= cfg.score_threshold
        boxes, scores = detections.boxes[keep], detections.scores[keep]
        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero(scores < cfg.high_score)
        predicted = _stack([t._motion.box for t in tracks])
        matches: dict[int, int] = {}  # track index -> box index

        def stage(t_idx: list[int], b_idx: NDArray[np.intp], overlaps: NDArray[np.float32]) -> None:
            for row, col in assign(overlaps, cfg.iou_match):
                matches[t_idx[row]] = int(b_idx[col])

        stage(list(range(len(tracks))), high, iou_matrix(predicted, boxes[high]))
        confirmed = [i for i in _free(tracks, matches) if tracks[i].hits >= cfg.min_hits]
        stage(confirmed, low, iou_matrix(predicted[confirmed], boxes[low]))
        tentative = [i for i in _free(tracks, matches) if tracks[i].hits < cfg.min_hits]
        rest = np.array([b for b in high if b not in matches.values()], np.intp)
        reach = np.array([tracks[i]._motion.centre_std() for i in tentative], np.float32)
        stage(tentative, rest, reach_iou(predicted[tentative], reach, boxes[rest]))

        survivors: list[PersonTrack] = []
        patience = cfg.max_missed_s
        for i, track in enumerate(tracks):
            if i in matches:
                b = matches[i]
                track._observe(boxes[b], float(scores[b]), now, frame_size)
                survivors.append(track)
            elif track.hits < cfg.min_hits and (track.lost or now - track.last_seen > patience):
                self.discarded += 1
            elif track.hits < cfg.min_hits:
                track._matched = False  # tentative: one miss forgiven
                survivors.append(track)
            else:
                track._matched = False
                track._motion.stop_growing()
                (ended if now - track.last_seen > patience else survivors).append(track)
        taken = set(matches.values())
        for new in high:
            if int(new) not in taken:
                survivors.append(self._start(boxes[new], float(scores[new]), now, frame_size))
        self.active = survivors
        return ended

    def hold(self, now: float) -> None:
        """Detection was skipped because the scene did not move: tracks matched at the last
        update stay seen at ``now``, where they were, and count it as a detection (the
        detector would have found the same boxes again, so a person who appears and
        stands still is confirmed); lost ones keep their clocks."""
        for track in self.active:
            if track._matched:
                track.last_seen = max(track.last_seen, now)
                track.hits += 1
                track._motion.hold(now)

    def predicted(self, now: float) -> list[tuple[PersonTrack, NDArray[np.float32]]]:
        """Every active track (tentative and lost included) with its box extrapolated to
        ``now``; nothing changes (faces are assigned to people between detections)."""
        return [(track, track._motion.box_at(now)) for track in self.active]

    def in_view(self) -> int:
        """Confirmed people seen at the last detection step (lost ones not counted)."""
        min_hits = self.config.min_hits
        return sum(1 for t in self.active if t._matched and t.hits >= min_hits)

    def finish(self) -> list[PersonTrack]:
        """End every track (the stream is over); return the confirmed ones."""
        ended, self.active = self.active, []
        confirmed = [t for t in ended if t.hits >= self.config.min_hits]
        self.discarded += len(ended) - len(confirmed)
        return confirmed

    def _start(
        self, box: NDArray[np.float32], score: float, now: float, frame_size: tuple[int, int]
    ) -> PersonTrack:
        foot = _foot(box, frame_size)
        track = PersonTrack(
            self._next_id, now, now, box.copy(), score, foot, foot, BoxFilter.start(box, now)
        )
        self._next_id += 1
        if self.line is not None:
            track.crossing = self.line.follow()
            track.crossing.observe(foot)
        return track


def assign(overlaps: NDArray[np.float32], minimum: float) -> list[tuple[int, int]]:
    """One-to-one ``(row, col)`` pairs with overlap ``>= minimum``: as many pairs as
    possible, then the largest summed overlap (Hungarian method, rows or columns first
    whichever are fewer)."""
    if overlaps.size == 0:
        return []
    eligible = overlaps >= minimum
    if not eligible.any():
        return []
    cost = np.where(eligible, 1.0 - overlaps.astype(np.float64), _NO_MATCH)
    flipped = cost.shape[0] > cost.shape[1]
    pairs = _hungarian(cost.T if flipped else cost)
    if flipped:
        pairs = [(c, r) for r, c in pairs]
    return sorted((r, c) for r, c in pairs if eligible[r, c])


def _hungarian(cost: NDArray[np.float64]) -> list[tuple[int, int]]:
    """Minimum-cost assignment of every row of ``cost`` ``[n, m]``, ``n <= m``, to a
    distinct column (shortest augmenting paths with potentials, O(n^2 m))."""
    n, m = cost.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, np.intp)  # owner[j]: 1-based row holding column j (0: none)
    way = np.zeros(m + 1, np.intp)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        min_v = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = np.flatnonzero(~used)
            reduced = cost[i0 - 1, free - 1] - u[i0] - v[free]
            better = reduced < min_v[free]
            min_v[free[better]] = reduced[better]
            way[free[better]] = j0
            j1 = int(free[np.argmin(min_v[free])])
            delta = min_v[j1]
            u[owner[used]] += delta
            v[used] -= delta
            min_v[free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = int(way[j0])
            owner[j0] = owner[j1]
            j0 = j1
    return [(int(owner[j]) - 1, j - 1) for j in range(1, m + 1) if owner[j]]


def reach_iou(
    boxes: NDArray[np.float32], reach: NDArray[np.float32], others: NDArray[np.float32]
) -> NDArray[np.float32]:
    """IoU of each of ``boxes`` with each of ``others`` after moving the box toward the
    other's centre by up to ``reach`` pixels per axis (where its motion may have taken it)."""
    if len(boxes) == 0 or len(others) == 0:
        return np.zeros((len(boxes), len(others)), np.float32)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    gap = (others[None, :, :2] + others[None, :, 2:]) / 2 - centres[:, None, :]
    shift = np.clip(gap, -reach[:, None, None], reach[:, None, None])  # [T, D, 2]
    moved = boxes[:, None, :] + np.concatenate([shift, shift], axis=2)
    lo = np.maximum(moved[..., :2], others[None, :, :2])
    hi = np.minimum(moved[..., 2:], others[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)[:, None]
    area_b = np.prod(others[:, 2:] - others[:, :2], axis=1)[None, :]
    result: NDArray[np.float32] = (inter / np.maximum(area_a + area_b - inter, 1e-6)).astype(
        np.float32
    )
    return result


def _free(tracks: list[PersonTrack], matches: dict[int, int]) -> list[int]:
    return [i for i in range(len(tracks)) if i not in matches]


def _stack(boxes: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    return np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)


def _foot(box: NDArray[np.floating], frame_size: tuple[int, int]) -> Point:
    """The box's bottom-centre in frame fractions."""
    width, height = frame_size
    return float(box[0] + box[2]) / 2 / width, float(box[3]) / height
