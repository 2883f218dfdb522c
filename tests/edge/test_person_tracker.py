"""The person tracker on synthetic boxes: one id per walker, through misses, overlaps,
crossings and low detection rates; low-score boxes; prediction; the counting line."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from edge_agent.config import PeopleConfig
from edge_agent.contract import Direction
from edge_agent.tracking.counting_line import CountingLine
from edge_agent.tracking.person_tracker import PersonTrack, PersonTracker, assign
from edge_agent.vision.detections import Detections, iou_matrix

SIZE = (640, 480)  # frame width, height
Person = tuple[float, float, float, float]  # centre x, foot y, height, score
Scene = Callable[[float], Sequence[Person | None]]  # stream time -> people (None: unseen)
CONFIG = PeopleConfig(score_threshold=0.25, high_score=0.5, iou_match=0.2, max_missed_s=1.5)


def person_box(cx: float, foot: float, height: float) -> list[float]:
    """A standing person's box: 0.4 x as wide as tall, its bottom at the feet."""
    return [cx - 0.2 * height, foot - height, cx + 0.2 * height, foot]


def detections(people: Sequence[Person | None]) -> Detections:
    seen = [p for p in people if p is not None]
    boxes = np.array([person_box(cx, foot, h) for cx, foot, h, _ in seen], np.float32)
    return Detections.boxes_only(boxes, np.array([p[3] for p in seen], np.float32))


def run(
    scene: Scene, fps: float, duration: float, tracker: PersonTracker | None = None
) -> list[PersonTrack]:
    """Detect ``fps`` times a second for ``duration`` s; every track that ended, in order."""
    tracker = tracker or PersonTracker(CONFIG)
    ended: list[PersonTrack] = []
    for i in range(round(duration * fps)):
        ended += tracker.update(detections(scene(i / fps)), i / fps, SIZE)
    return ended + tracker.finish()


def foot_x(track: PersonTrack) -> tuple[float, float]:
    """First and last foot x, in pixels."""
    return track.first_foot[0] * SIZE[0], track.last_foot[0] * SIZE[0]


def assert_walk(track: PersonTrack, start: float, end: float, tolerance: float) -> None:
    """The track's feet went from ``start`` to within ``tolerance`` px of ``end``."""
    first, last = foot_x(track)
    assert first == pytest.approx(start, abs=0.5)
    assert last == pytest.approx(end, abs=tolerance)


@pytest.mark.parametrize(("fps", "speed"), [(15, 150.0), (5, 150.0), (5, 300.0)])
def test_a_walker_is_one_track_with_dwell_and_feet(fps: float, speed: float) -> None:
    # 300 px/s is 1.5 body heights a second: at 5/s the box moves 0.75 of its width
    # between the first two detections (IoU 0.14), before the filter knows the speed.
    ended = run(lambda t: [(100 + speed * t, 400, 200, 0.9)], fps, 1.5)
    (track,) = ended
    steps = round(1.5 * fps)
    assert track.hits == steps
    assert track.first_seen == 0.0 and track.last_seen == pytest.approx((steps - 1) / fps)
    end_x = 100 + speed * (steps - 1) / fps
    assert_walk(track, 100.0, end_x, 4.0)
    assert track.first_foot[1] == track.last_foot[1] == pytest.approx(400 / 480)


def test_irregular_detection_times_follow_the_walk() -> None:
    # Stream seconds between detections from 0.05 to 0.4 (dropped frames, a busy core):
    # the filter steps by each gap, so the walk stays one track on its line.
    gaps = np.random.default_rng(7).uniform(0.05, 0.4, 12)
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    tracker = PersonTracker(CONFIG)
    for t in times:
        assert tracker.update(detections([(80 + 200 * t, 400, 200, 0.9)]), float(t), SIZE) == []
    ((_, ahead),) = tracker.predicted(float(times[-1]) + 0.3)
    assert (ahead[0] + ahead[2]) / 2 == pytest.approx(80 + 200 * (times[-1] + 0.3), abs=6.0)
    (track,) = tracker.finish()
    assert track.hits == len(times)
    assert_walk(track, 80.0, 80 + 200 * float(times[-1]), 4.0)


def walk_with_gap(gap: tuple[float, float]) -> Scene:
    return lambda t: [None if gap[0] <= t < gap[1] else (100 + 100 * t, 400, 200, 0.9)]


def test_a_short_occlusion_keeps_the_id_a_long_one_ends_it() -> None:
    # Unseen for 1.2 s (< max_missed_s 1.5): the walk went on 120 px meanwhile.
    (track,) = run(walk_with_gap((1.0, 2.2)), 15, 3.0)
    assert track.hits == 45 - 18
    assert foot_x(track)[1] == pytest.approx(100 + 100 * 44 / 15, abs=4.0)
    tracker = PersonTracker(CONFIG)
    ended = [
        (i / 15, t)
        for i in range(60)
        for t in tracker.update(detections(walk_with_gap((1.0, 2.8))(i / 15)), i / 15, SIZE)
    ]
    ((t_end, first),) = ended  # seen last at 14/15 s, gone 1.5 s later
    assert first.last_seen == pytest.approx(14 / 15)
    assert 14 / 15 + 1.5 < t_end <= 14 / 15 + 1.5 + 1 / 15 + 1e-9
    (second,) = tracker.finish()
    assert second.track_id != first.track_id and second.first_seen == pytest.approx(42 / 15)


def follower(t: float) -> list[Person | None]:
    """Two people from the same door, 0.2 s apart, the second on the first's heels."""
    a = (60 + 150 * t, 400, 200, 0.9)
    b = (60 + 150 * (t - 0.2), 400, 200, 0.9) if t >= 0.2 - 1e-9 else None
    return [a, b]


def test_a_second_person_entering_close_behind_stays_two_people_at_15_fps() -> None:
    first, second = sorted(run(follower, 15, 3.0), key=lambda t: t.track_id)
    assert (first.hits, second.hits) == (45, 42)
    assert second.first_seen == pytest.approx(0.2)
    assert_walk(first, 60.0, 60 + 150 * 44 / 15, 4.0)
    assert_walk(second, 60.0, 30 + 150 * 44 / 15, 4.0)


def test_a_second_person_entering_close_behind_stays_two_people_at_5_fps() -> None:
    # One detection of the first person before the second appears where the first was:
    # whether that first box was one or the other is undecidable, so only the split is
    # checked: two people, every detection counted once, one ahead of the other.
    ended = run(follower, 5, 3.0)
    assert len(ended) == 2
    assert sum(t.hits for t in ended) == 15 + 14
    assert min(t.hits for t in ended) >= 13
    last = sorted(foot_x(t)[1] for t in ended)
    assert last == [pytest.approx(30 + 150 * 2.8, abs=4.0), pytest.approx(60 + 150 * 2.8, abs=4.0)]


def passer_behind(t: float) -> list[Person | None]:
    """Someone stands; 0.2 s later another walks in behind them, overlapping, and on."""
    still = (300, 420, 220, 0.9)
    walker = (260 + 120 * (t - 0.2), 380, 180, 0.8) if t >= 0.2 - 1e-9 else None
    return [still, walker]


@pytest.mark.parametrize("fps", [15, 5])
def test_a_person_passing_behind_a_standing_one_stays_a_second_person(fps: float) -> None:
    boxes = detections(passer_behind(0.2)).boxes
    assert 0.2 < iou_matrix(boxes[:1], boxes[1:])[0, 0] < 0.5  # overlapping on entry
    still, walker = sorted(run(passer_behind, fps, 2.4), key=lambda t: t.track_id)
    assert still.hits == round(2.4 * fps) and walker.hits == round(2.2 * fps)
    assert_walk(still, 300.0, 300.0, 2.0)
    end = 260 + 120 * (round(2.4 * fps) - 1 - 0.2 * fps) / fps
    assert_walk(walker, 260.0, end, 4.0)


def crossing(occluded_score: float) -> Scene:
    """One walks left to right, one (a little further away) right to left; they overlap
    in the middle, where the one behind scores ``occluded_score``."""

    def scene(t: float) -> list[Person | None]:
        a, b = 120 + 160 * t, 520 - 160 * t
        behind = occluded_score if abs(a - b) < 60 else 0.8
        return [(a, 420, 220, 0.9), (b, 390, 190, behind)]

    return scene


@pytest.mark.parametrize("fps", [15, 5])
@pytest.mark.parametrize("occluded_score", [0.8, 0.3])
def test_two_people_crossing_keep_their_ids(fps: float, occluded_score: float) -> None:
    ended = run(crossing(occluded_score), fps, 2.6)
    right, left = sorted(ended, key=lambda t: t.track_id)
    last = (round(2.6 * fps) - 1) / fps
    assert_walk(right, 120.0, 120 + 160 * last, 4.0)
    assert_walk(left, 520.0, 520 - 160 * last, 4.0)
    assert right.hits == left.hits == round(2.6 * fps)


def test_low_score_boxes_continue_a_person_but_never_start_or_confirm_one() -> None:
    def fading(t: float) -> list[Person | None]:
        return [(200 + 60 * t, 400, 200, 0.9 if t < 0.5 else 0.3)]

    (track,) = run(fading, 10, 2.0)
    assert track.hits == 20 and track.score == pytest.approx(0.3)

    tracker = PersonTracker(CONFIG)
    assert run(lambda t: [(200, 400, 200, 0.3)], 10, 2.0, tracker) == []
    assert tracker.discarded == 0  # never even tentative
    assert run(lambda t: [(200, 400, 200, 0.1)], 10, 2.0, tracker) == []  # below the floor
    # One confident box, then weak ones: a tentative track the weak boxes cannot confirm.
    assert run(lambda t: [(200, 400, 200, 0.9 if t == 0 else 0.3)], 10, 1.0, tracker) == []
    assert tracker.discarded == 1


@pytest.mark.parametrize(
    ("seen", "hits", "first_seen", "discarded"), [("x.xxx", 4, 0.0, 0), ("x..xxx", 3, 0.6, 1)]
)
def test_a_new_track_survives_one_miss_not_two(
    seen: str, hits: int, first_seen: float, discarded: int
) -> None:
    # At 5/s: "x" detected, "." missed. One miss before confirmation is forgiven.
    tracker = PersonTracker(CONFIG)
    walk = [[(200 + 100 * i / 5, 400, 200, 0.9)] if c == "x" else [] for i, c in enumerate(seen)]
    (track,) = run(lambda t: walk[round(t * 5)], 5, len(seen) / 5, tracker)
    assert track.hits == hits and track.first_seen == pytest.approx(first_seen)
    assert tracker.discarded == discarded


def test_predicted_extrapolates_without_changing_state() -> None:
    tracker = PersonTracker(CONFIG)
    for i in range(15):
        tracker.update(detections([(100 + 150 * i / 15, 400, 200, 0.9)]), i / 15, SIZE)
    (track,) = tracker.active
    box = track.box.copy()
    ((same, ahead),) = tracker.predicted(14 / 15 + 0.5)
    assert same is track
    assert (ahead[0] + ahead[2]) / 2 == pytest.approx(100 + 150 * (14 / 15 + 0.5), abs=3.0)
    assert ahead[3] - ahead[1] == pytest.approx(200.0, abs=2.0)
    np.testing.assert_array_equal(track.box, box)
    np.testing.assert_array_equal(tracker.predicted(14 / 15 + 0.5)[0][1], ahead)


def test_hold_keeps_tracks_seen_where_they_were() -> None:
    tracker = PersonTracker(CONFIG)
    for i in range(10):
        tracker.update(detections([(300 + 30 * i / 10, 400, 200, 0.9)]), i / 10, SIZE)
    (track,) = tracker.active
    box = track.box.copy()
    for i in range(1, 31):  # 3 s of a still scene, twice max_missed_s
        tracker.hold(0.9 + i / 10)
    assert track.last_seen == pytest.approx(3.9) and tracker.in_view() == 1
    np.testing.assert_allclose(tracker.predicted(3.9)[0][1], box)
    assert tracker.update(detections([(330, 400, 200, 0.9)]), 4.0, SIZE) == []
    assert tracker.active == [track] and track.hits == 10 + 30 + 1  # a hold is a hit


def test_someone_who_appears_and_stands_still_is_confirmed() -> None:
    """Detection runs once when they appear, then the scene stands still: each skipped
    detection would have found them again, so they become a person."""
    tracker = PersonTracker(CONFIG)
    tracker.update(detections([(300, 400, 200, 0.9)]), 0.0, SIZE)
    for i in range(1, 4):
        tracker.hold(i / 5)
    assert tracker.in_view() == 1
    (gone,) = tracker.update(detections([]), 2.5, SIZE)
    assert gone.hits == 4 and gone.last_seen == pytest.approx(0.6)


def test_hold_does_not_revive_a_lost_track() -> None:
    tracker = PersonTracker(CONFIG)
    for i in range(10):
        tracker.update(detections([(300, 400, 200, 0.9)]), i / 10, SIZE)
    tracker.update(detections([]), 1.0, SIZE)
    assert tracker.in_view() == 0 and len(tracker.active) == 1
    tracker.hold(2.0)
    (ended,) = tracker.update(detections([]), 2.5, SIZE)
    assert ended.last_seen == pytest.approx(0.9)


def test_active_is_replaced_not_mutated() -> None:
    tracker = PersonTracker(CONFIG)
    before = tracker.active
    tracker.update(detections([(300, 400, 200, 0.9)]), 0.0, SIZE)
    assert before == [] and len(tracker.active) == 1
    assert tracker.in_view() == 0  # tentative until min_hits
    tracker.apply_settings(CONFIG.model_copy(update={"min_hits": 1}))
    assert tracker.in_view() == 1


def test_the_foot_point_crosses_the_counting_line() -> None:
    # Across the picture at 60 % height, in = the upper side (left of a -> b, y down).
    line = CountingLine((0.0, 0.6), (1.0, 0.6), in_side="left")

    def up(t: float) -> list[Person | None]:  # feet from y 0.75 to 0.45; the box centre
        return [(320, 360 - 72 * t, 200, 0.9)]  # stays above the line all the way

    (track,) = run(up, 10, 2.0, PersonTracker(CONFIG, line))
    assert track.first_foot[1] == pytest.approx(0.75) and track.last_foot[1] < 0.47
    assert track.direction == Direction.IN
    (back,) = run(lambda t: up(1.9 - t), 10, 2.0, PersonTracker(CONFIG, line))
    assert back.direction == Direction.OUT
    (unlined,) = run(up, 10, 2.0)
    assert unlined.crossing is None and unlined.direction is None


def test_assignment_is_one_to_one_and_maximal() -> None:
    # Greedy best-first would take (0, 0) = 0.6 and leave row 1 unmatched.
    overlaps = np.array([[0.6, 0.5], [0.55, 0.0]], np.float32)
    assert assign(overlaps, 0.2) == [(0, 1), (1, 0)]
    assert assign(overlaps, 0.58) == [(0, 0)]
    assert assign(np.zeros((0, 3), np.float32), 0.2) == []
    assert assign(overlaps.T.copy(), 0.2) == [(0, 1), (1, 0)]


def test_a_newcomer_on_the_same_spot_after_max_missed_s_is_someone_else() -> None:
    """The first person left (unseen longer than max_missed_s, nothing detected meanwhile
    because nothing moved); the next one stands exactly where they stood."""
    tracker = PersonTracker(CONFIG)
    for i in range(10):
        tracker.update(detections([(300, 400, 200, 0.9)]), i / 10, SIZE)
    tracker.update(detections([]), 1.0, SIZE)
    late = 0.9 + CONFIG.max_missed_s + 0.1
    (first,) = tracker.update(detections([(300, 400, 200, 0.9)]), late, SIZE)
    assert first.last_seen == pytest.approx(0.9)
    (second,) = tracker.active
    assert second is not first and second.first_seen == pytest.approx(late)
