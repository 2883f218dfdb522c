"""The face tracker keeps two faces apart when their boxes overlap less than ``iou_match``,
including a second face that appears 0.2 s after the first, beside it or in its place."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.config import TrackerConfig
from edge_agent.tracking.tracker import IouTracker, Track
from edge_agent.vision.detections import Detections, iou_matrix

FRAME = np.zeros((480, 640, 3), np.uint8)
SIZE = 60.0


def faces(*xs: float) -> Detections:
    """Faces of ``SIZE`` px at x positions ``xs`` (same row), with keypoints."""
    boxes = np.array([[x, 100.0, x + SIZE, 100.0 + SIZE] for x in xs], np.float32).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return Detections(boxes, np.full(len(xs), 0.9, np.float32), np.repeat(centres[:, None], 6, 1))


def run(tracker: IouTracker, frames: list[tuple[float, Detections]]) -> list[Track]:
    ended = [track for t, dets in frames for track in tracker.update(dets, t, FRAME)]
    return ended + tracker.finish()


def overlap(x1: float, x2: float) -> float:
    return float(iou_matrix(faces(x1).boxes, faces(x2).boxes)[0, 0])


def test_a_second_face_beside_the_first_from_0_2_s_on_is_a_second_track() -> None:
    config = TrackerConfig(iou_match=0.3, min_hits=3)
    assert 0.0 < overlap(100, 140) < config.iou_match  # they touch, below the threshold
    frames = [(i * 0.1, faces(100) if i < 2 else faces(100, 140)) for i in range(20)]
    first, second = sorted(run(IouTracker(config), frames), key=lambda t: t.track_id)
    assert (first.hits, second.hits) == (20, 18)
    assert second.first_seen == pytest.approx(0.2)


@pytest.mark.parametrize(("iou_match", "tracks"), [(0.3, 2), (0.1, 1)])
def test_a_face_replacing_another_0_2_s_later_merges_only_above_iou_match(
    iou_match: float, tracks: int
) -> None:
    # The first face leaves at 0.5 s; 0.2 s later another appears overlapping its last box
    # by IoU 0.2. Honouring iou_match 0.3 they are two people; at 0.1 the tracker (rightly,
    # for that setting) takes the second for the first moving on, so the threshold decides.
    assert overlap(100, 140) == pytest.approx(0.2)
    frames = [(i * 0.1, faces(100)) for i in range(6)]
    frames += [(0.6, faces())]
    frames += [(0.7 + i * 0.1, faces(140)) for i in range(6)]
    ended = run(IouTracker(TrackerConfig(iou_match=iou_match, min_hits=3)), frames)
    assert len(ended) == tracks
    assert sum(t.hits for t in ended) == 12
