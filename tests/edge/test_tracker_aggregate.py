"""The IoU tracker's lifecycle and crop keeping, and the aggregation of crop estimates."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from edge_agent.config import TrackerConfig
from edge_agent.contract import Gender
from edge_agent.tracking.aggregate import AGE_INTERVAL, age_estimate, combine, gender_estimate
from edge_agent.tracking.tracker import IouTracker, Track, face_quality
from edge_agent.vision.detections import Detections, FaceEstimate
from edge_agent.vision.model_files import ModelFiles

FRAME = np.zeros((480, 640, 3), np.uint8)
LABELS = ("female", "male")


def face(
    x: float, y: float = 100.0, size: float = 60.0, score: float = 0.9, nose_dx: float = 0.0
) -> Detections:
    """One face box at (x, y) with plausible keypoints; ``nose_dx`` turns the head."""
    box = np.array([[x, y, x + size, y + size]], np.float32)
    cx, cy = x + size / 2, y + size / 2
    kp = np.array(
        [
            [cx - 0.2 * size, cy - 0.1 * size],  # right eye (image left)
            [cx + 0.2 * size, cy - 0.1 * size],  # left eye
            [cx + nose_dx * size, cy + 0.05 * size],  # nose tip
            [cx, cy + 0.25 * size],  # mouth
            [cx - 0.45 * size, cy],  # right ear
            [cx + 0.45 * size, cy],  # left ear
        ],
        np.float32,
    )[None]
    return Detections(box, np.array([score], np.float32), kp)


def run(tracker: IouTracker, frames: list[tuple[float, Detections]]) -> list[tuple[float, Track]]:
    """Feed frames; every (time, track) that ended, then whatever ``finish`` returns."""
    ended = [(t, track) for t, dets in frames for track in tracker.update(dets, t, FRAME)]
    return ended + [(float("inf"), track) for track in tracker.finish()]


def test_a_face_that_stays_is_one_track() -> None:
    tracker = IouTracker(TrackerConfig(max_missed_s=1.0, min_hits=3))
    frames = [(i * 0.1, face(100 + 2 * i)) for i in range(20)]
    ended = run(tracker, frames)
    assert len(ended) == 1
    track = ended[0][1]
    assert track.hits == 20
    assert track.first_seen == 0.0 and track.last_seen == pytest.approx(1.9)


def test_short_gap_keeps_the_track() -> None:
    tracker = IouTracker(TrackerConfig(max_missed_s=1.0, min_hits=3))
    frames = [(i * 0.1, face(100)) for i in range(5)]
    frames += [(0.5 + i * 0.1, Detections.empty()) for i in range(8)]  # 0.8 s unseen
    frames += [(1.3 + i * 0.1, face(100)) for i in range(5)]
    ended = run(tracker, frames)
    assert [track.hits for _, track in ended] == [10]


def test_face_gone_longer_than_max_missed_becomes_two_tracks() -> None:
    tracker = IouTracker(TrackerConfig(max_missed_s=1.0, min_hits=3))
    frames = [(i * 0.1, face(100)) for i in range(5)]  # seen 0.0 .. 0.4
    frames += [(0.5 + i * 0.1, Detections.empty()) for i in range(15)]  # gone to 1.9
    frames += [(2.0 + i * 0.1, face(100)) for i in range(5)]  # back, same place
    ended = run(tracker, frames)
    assert len(ended) == 2
    (t_first, first), (_, second) = ended
    assert first.track_id != second.track_id
    # The first track ended by timeout, on the first frame more than 1 s after 0.4.
    assert 1.4 < t_first <= 1.5 + 1e-9
    assert first.last_seen == pytest.approx(0.4)
    assert second.first_seen == pytest.approx(2.0)
    assert (first.hits, second.hits) == (5, 5)


def test_fewer_than_min_hits_never_becomes_a_person() -> None:
    tracker = IouTracker(TrackerConfig(max_missed_s=0.5, min_hits=3))
    frames = [(0.0, face(100)), (0.1, face(100))]  # two detections only
    frames += [(0.2 + i * 0.1, Detections.empty()) for i in range(10)]
    assert run(tracker, frames) == []
    assert tracker.active == []
    # Ended by finish() with too few hits: still nobody.
    tracker.update(face(300), 5.0, FRAME)
    tracker.update(face(300), 5.1, FRAME)
    assert tracker.finish() == []


def test_two_faces_apart_are_two_tracks() -> None:
    tracker = IouTracker(TrackerConfig(min_hits=2))
    both = Detections(
        np.concatenate([face(50).boxes, face(400).boxes]),
        np.array([0.9, 0.8], np.float32),
        np.concatenate([face(50).keypoints, face(400).keypoints]),
    )
    ended = run(tracker, [(i * 0.1, both) for i in range(4)])
    assert len(ended) == 2
    assert {round(float(t.box[0])) for _, t in ended} == {50, 400}


def test_a_second_person_elsewhere_within_the_missed_window_is_a_second_track() -> None:
    """Person A stands at the left for 0.4 s and leaves; 0.2 s later person B enters at
    the right (no overlap with A: IoU 0), well within A's ``max_missed_s``. Two people,
    two events: a tracker that matched regardless of overlap would make them one."""
    tracker = IouTracker(TrackerConfig(iou_match=0.3, max_missed_s=1.0, min_hits=3))
    frames = [(i * 0.1, face(50)) for i in range(5)]  # A: 0.0 .. 0.4 at x 50..110
    frames += [(0.5, Detections.empty())]
    frames += [(0.6 + i * 0.1, face(400)) for i in range(5)]  # B: 0.6 .. 1.0 at x 400..460
    ended = run(tracker, frames)
    assert len(ended) == 2, [(t.track_id, t.hits) for _, t in ended]
    by_x = {round(float(track.box[0])): track for _, track in ended}
    assert set(by_x) == {50, 400}
    assert (by_x[50].hits, by_x[400].hits) == (5, 5)
    assert by_x[50].last_seen == pytest.approx(0.4)
    assert by_x[400].first_seen == pytest.approx(0.6)


def _shift_for_iou(size: float, iou: float) -> float:
    """How far to slide a ``size``-square box sideways for this IoU with where it was:
    overlap ``size * (size - d)`` over union ``size * (size + d)``, so d = size(1-iou)/(1+iou)."""
    return size * (1.0 - iou) / (1.0 + iou)


@pytest.mark.parametrize(("iou", "tracks"), [(0.29, 2), (0.31, 1)])
def test_iou_just_below_the_threshold_starts_a_new_track(iou: float, tracks: int) -> None:
    """Threshold 0.3: a face that moved so its box overlaps the last one by IoU 0.29 is
    someone else; by 0.31 it is the same person (the control)."""
    size = 60.0
    shift = _shift_for_iou(size, iou)
    tracker = IouTracker(TrackerConfig(iou_match=0.3, max_missed_s=1.0, min_hits=1))
    frames = [(0.0, face(100, size=size)), (0.1, face(100 + shift, size=size))]
    ended = run(tracker, frames)
    assert len(ended) == tracks, (iou, [(t.track_id, t.hits) for _, t in ended])
    assert sum(track.hits for _, track in ended) == 2


def test_best_crops_bounds_the_crops_kept_and_keeps_the_best() -> None:
    tracker = IouTracker(TrackerConfig(best_crops=3, min_hits=1), min_face_px=24)
    scores = [0.61, 0.95, 0.7, 0.99, 0.65, 0.8, 0.62, 0.9, 0.75, 0.66]
    ended = run(tracker, [(i * 0.1, face(100, score=s)) for i, s in enumerate(scores)])
    (_, track) = ended[0]
    assert len(track.crops) == 3
    qualities = [c.quality for c in track.crops]
    assert qualities == sorted(qualities, reverse=True)
    all_q = [float(face_quality(face(100, score=s))[0]) for s in scores]
    np.testing.assert_allclose(qualities, sorted(all_q, reverse=True)[:3], rtol=1e-6)
    # Crops hold the face's neighbourhood with keypoints in crop coordinates.
    crop = track.crops[0]
    assert crop.image.shape[0] > 60 and crop.image.shape[1] > 60
    assert (crop.keypoints >= 0).all()
    assert (crop.keypoints[:, 0] < crop.image.shape[1]).all()


def test_faces_below_min_size_keep_no_crops() -> None:
    tracker = IouTracker(TrackerConfig(min_hits=2), min_face_px=24)
    ended = run(tracker, [(i * 0.1, face(100, size=16)) for i in range(4)])
    assert len(ended) == 1
    assert ended[0][1].crops == []


def test_face_quality_prefers_frontal_over_turned() -> None:
    frontal = float(face_quality(face(100))[0])
    half_turned = float(face_quality(face(100, nose_dx=0.1))[0])
    profile = float(face_quality(face(100, nose_dx=0.2))[0])
    other_way = float(face_quality(face(100, nose_dx=-0.1))[0])
    assert frontal > half_turned > profile > 0
    assert half_turned == pytest.approx(other_way, rel=1e-5)
    # Bigger and more confident faces rate higher, all else equal.
    assert float(face_quality(face(100, size=120))[0]) > frontal
    assert float(face_quality(face(100, score=0.7))[0]) < frontal


# ---------------------------------------------------------------- aggregation


def estimate(gender: list[float], age: NDArray[np.float64]) -> FaceEstimate:
    points = np.zeros((5, 2), np.float32)
    return FaceEstimate(np.asarray(gender, np.float32), np.asarray(age, np.float32), 1.0, points)


def one_hot(i: int) -> NDArray[np.float64]:
    v = np.zeros(81)
    v[i] = 1.0
    return v


def test_combine_weights_by_quality() -> None:
    a = estimate([1.0, 0.0], one_hot(20))
    b = estimate([0.0, 1.0], one_hot(60))
    gender, age = combine([a, b], [3.0, 1.0])
    np.testing.assert_allclose(gender, [0.75, 0.25], rtol=1e-6)
    assert age[20] == pytest.approx(0.75) and age[60] == pytest.approx(0.25)
    assert age.sum() == pytest.approx(1.0)
    # Only relative weights matter.
    np.testing.assert_allclose(combine([a, b], [30.0, 10.0])[0], gender)
    # No usable weights: a plain mean rather than a division by zero.
    gender0, _ = combine([a, b], [0.0, 0.0])
    np.testing.assert_allclose(gender0, [0.5, 0.5])
    with pytest.raises(ValueError):
        combine([], [])


@pytest.fixture(scope="module")
def class_ages(model_files: ModelFiles) -> tuple[float, ...]:
    ages = model_files.age_weights
    assert len(ages) == 81
    return ages


def check_interval(probabilities: NDArray[np.float64], ages: tuple[float, ...]) -> None:
    result = age_estimate(probabilities, ages)
    expected = float(probabilities @ np.asarray(ages))
    assert result.value == pytest.approx(expected, abs=0.05)
    assert result.low <= result.value <= result.high
    inside = [i for i, a in enumerate(ages) if result.low <= a <= result.high]
    mass = float(probabilities[inside].sum())
    assert result.confidence == pytest.approx(mass, abs=2e-3), (result, mass)


def test_age_estimate_interval_and_confidence(class_ages: tuple[float, ...]) -> None:
    rng = np.random.default_rng(3)
    centres = np.arange(81)
    for mean, spread in [(30, 4), (5, 2), (70, 10), (45, 25)]:
        p = np.exp(-0.5 * ((centres - mean) / spread) ** 2)
        check_interval(p / p.sum(), class_ages)
    for _ in range(50):
        check_interval(rng.dirichlet(np.full(81, 0.3)), class_ages)
    sharp = age_estimate(one_hot(40), class_ages)
    assert (sharp.value, sharp.low, sharp.high, sharp.confidence) == (40.0, 40.0, 40.0, 1.0)
    wide = age_estimate(np.full(81, 1 / 81), class_ages)
    assert wide.confidence >= AGE_INTERVAL
    assert wide.high - wide.low > 50


def test_age_confidence_is_the_mass_inside_when_the_mean_stretches_the_interval(
    class_ages: tuple[float, ...],
) -> None:
    """A skewed distribution whose mean lies outside its central 80%: the interval is
    stretched to include the mean, and the confidence must count what that adds."""
    p = np.zeros(81)
    p[1], p[5], p[80] = 0.91, 0.01, 0.08  # ages 1, 5 and 80: mean 7.4, outside [1, 1]
    check_interval(p, class_ages)


def test_gender_estimate_picks_the_larger() -> None:
    male = gender_estimate(np.array([0.3, 0.7]), LABELS)
    assert male.value is Gender.MALE and male.confidence == pytest.approx(0.7)
    female = gender_estimate(np.array([0.9, 0.1]), LABELS)
    assert female.value is Gender.FEMALE and female.confidence == pytest.approx(0.9)
    # The contract keeps confidence in [0.5, 1]: the winner always satisfies it.
    assert gender_estimate(np.array([0.5, 0.5]), LABELS).confidence == 0.5
