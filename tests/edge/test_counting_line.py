"""The counting line: segment geometry, hysteresis, the tracker's trajectory, a real clip."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.camera.sources import read_frames
from edge_agent.config import AgentConfig, CameraConfig, PeopleConfig, TrackerConfig
from edge_agent.contract import Direction
from edge_agent.pipeline import CameraPipeline, load_models
from edge_agent.tracking.counting_line import CountingLine, Point, camera_line
from edge_agent.tracking.tracker import IouTracker
from edge_agent.vision.detections import Detections
from tests.paths import WALK_AND_PAUSE

# Across the middle, left edge to right edge: facing along it (toward the image's right),
# the left hand side is the upper half of the picture (y is down on screen).
MIDDLE = CountingLine((0.0, 0.5), (1.0, 0.5), in_side="left")


def direction(line: CountingLine, path: list[Point]) -> Direction | None:
    crossing = line.follow()
    for p in path:
        crossing.observe(p)
    return crossing.direction()


def straight(start: Point, end: Point, steps: int = 20) -> list[Point]:
    return [
        (start[0] + (end[0] - start[0]) * i / steps, start[1] + (end[1] - start[1]) * i / steps)
        for i in range(steps + 1)
    ]


def test_sides_follow_the_screen() -> None:
    assert MIDDLE.side((0.5, 0.2)) == -1  # upper half: left of a -> b
    assert MIDDLE.side((0.5, 0.8)) == 1
    assert MIDDLE.side((0.5, 0.51)) == 0  # within the tolerance band
    down = CountingLine((0.3, 0.0), (0.3, 1.0))  # facing down the screen: left is image right
    assert down.side((0.6, 0.5)) == -1 and down.side((0.1, 0.5)) == 1


def test_crossing_the_segment_both_ways() -> None:
    assert direction(MIDDLE, straight((0.5, 0.9), (0.5, 0.1))) == Direction.IN
    assert direction(MIDDLE, straight((0.5, 0.1), (0.5, 0.9))) == Direction.OUT
    right_is_in = CountingLine((0.0, 0.5), (1.0, 0.5), in_side="right")
    assert direction(right_is_in, straight((0.5, 0.9), (0.5, 0.1))) == Direction.OUT
    # Reversing the segment swaps its sides.
    reverse = CountingLine((1.0, 0.5), (0.0, 0.5), in_side="left")
    assert direction(reverse, straight((0.5, 0.9), (0.5, 0.1))) == Direction.OUT


def test_not_crossing() -> None:
    assert direction(MIDDLE, straight((0.2, 0.1), (0.8, 0.3))) is None  # stays above
    assert direction(MIDDLE, [(0.5, 0.8)] * 10) is None  # stands still
    assert direction(MIDDLE, []) is None  # never seen
    # Crosses and comes back: no net crossing.
    assert (
        direction(MIDDLE, straight((0.5, 0.8), (0.5, 0.2)) + straight((0.5, 0.2), (0.5, 0.8)))
        is None
    )


def test_crossing_only_the_extension_does_not_count() -> None:
    short = CountingLine((0.4, 0.5), (0.6, 0.5))
    assert direction(short, straight((0.5, 0.9), (0.5, 0.1))) == Direction.IN
    assert direction(short, straight((0.8, 0.9), (0.8, 0.1))) is None  # right of b
    assert direction(short, straight((0.1, 0.9), (0.3, 0.1))) is None  # left of a
    # Around the end (extension) and back through the segment: same side as at first sight.
    around = straight((0.5, 0.8), (0.9, 0.8)) + straight((0.9, 0.8), (0.9, 0.2))
    around += straight((0.9, 0.2), (0.5, 0.2)) + straight((0.5, 0.2), (0.5, 0.8))
    assert direction(short, around) is None


def test_hovering_on_the_line_does_not_flip() -> None:
    rng = np.random.default_rng(3)
    # Arrives from below, then jitters +-1.5 % around the line: still below, no crossing.
    hover = straight((0.5, 0.9), (0.5, 0.5)) + [
        (0.5, 0.5 + float(d)) for d in rng.uniform(-0.015, 0.015, 200)
    ]
    assert direction(MIDDLE, hover) is None
    # A last wobble 1 % past the line: a crossing without the band, none with it.
    wobble = [*hover, (0.5, 0.49)]
    assert direction(MIDDLE, wobble) is None
    assert direction(CountingLine((0.0, 0.5), (1.0, 0.5), tolerance=0.0), wobble) == Direction.IN
    # Hovering, then walking on through: counted once.
    assert direction(MIDDLE, hover + straight((0.5, 0.5), (0.5, 0.1))) == Direction.IN


def test_config_validates_the_line() -> None:
    camera = CameraConfig(id="door", source="0", line=((0.0, 0.5), (1.0, 0.5)), in_side="right")
    config = AgentConfig(cameras=[camera, CameraConfig(id="hall", source="1")])
    line = camera_line(config, "door")
    assert line == CountingLine((0.0, 0.5), (1.0, 0.5), in_side="right")
    assert camera_line(config, "hall") is None and camera_line(config, "nope") is None
    with pytest.raises(ValidationError):
        CameraConfig(id="door", source="0", line=((0.0, 0.5), (1.2, 0.5)))
    with pytest.raises(ValidationError):
        CameraConfig(id="door", source="0", line=((0.3, 0.5), (0.3, 0.5)))
    with pytest.raises(ValidationError):
        CameraConfig(id="door", source="0", line=((0.0, 0.5), (1.0, 0.5)), in_side="up")


FRAME = np.zeros((400, 800, 3), np.uint8)  # 800 wide, 400 high


def box(cx: float, cy: float, size: float = 60.0) -> Detections:
    """One face centred at pixel (cx, cy)."""
    boxes = np.array([[cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]], np.float32)
    kp = np.repeat(np.array([[[cx, cy]]], np.float32), 6, axis=1)
    return Detections(boxes, np.array([0.9], np.float32), kp)


def walk(tracker: IouTracker, centres: list[tuple[float, float]]) -> list[Direction | None]:
    ended = [
        track
        for i, (cx, cy) in enumerate(centres)
        for track in tracker.update(box(cx, cy), i * 0.1, FRAME)
    ]
    return [track.direction for track in ended + tracker.finish()]


def test_tracker_keeps_normalised_ends_and_direction() -> None:
    # A vertical line at x = 0.5 directed down the screen: its left is the image's right.
    line = CountingLine((0.5, 0.0), (0.5, 1.0), in_side="left")
    tracker = IouTracker(TrackerConfig(min_hits=3), line=line)
    path = [(300.0 + 10 * i, 200.0) for i in range(21)]  # x 300 -> 500 px of 800
    tracker.update(box(*path[0]), 0.0, FRAME)
    (track,) = tracker.active
    for i, centre in enumerate(path[1:], 1):
        tracker.update(box(*centre), i * 0.1, FRAME)
    assert track.first_centre == pytest.approx((0.375, 0.5))
    assert track.last_centre == pytest.approx((0.625, 0.5))
    assert track.direction == Direction.IN
    assert [t.direction for t in tracker.finish()] == [Direction.IN]
    back = IouTracker(TrackerConfig(min_hits=3), line=line)
    assert walk(back, path[::-1]) == [Direction.OUT]
    assert walk(IouTracker(TrackerConfig(min_hits=3)), path) == [None]  # no line
    # Short of the line, within the tolerance band (0.02 x 800 = 16 px): no crossing.
    assert walk(
        IouTracker(TrackerConfig(min_hits=3), line=line), path[:11] + [(410.0, 200.0)] * 5
    ) == [None]


# Measured on the clip (480 x 270, default detector and tracker): three people walk up
# to the camera. Face centres from first to last sight, in frame fractions: the woman on
# the left drifts left (x 0.238 -> 0.160, y ~0.44), the man on the right drifts right
# (x 0.671 -> 0.783, y ~0.50), the woman in the middle stays put (x ~0.47, y ~0.39).
LEFT_LINE = ((0.2, 0.0), (0.2, 1.0))  # down the screen; its left is the image's right
RIGHT_LINE = ((0.72, 1.0), (0.72, 0.0))  # up the screen; its right is the image's right
SHORT_LINE = ((0.2, 0.0), (0.2, 0.3))  # above the faces: only its extension is crossed


def test_walk_and_pause_directions() -> None:
    """The face-only path (people detection off): a face's centre crosses the line."""
    cameras = [
        CameraConfig(id="plain", source=str(WALK_AND_PAUSE)),
        CameraConfig(id="left", source=str(WALK_AND_PAUSE), line=LEFT_LINE, in_side="left"),
        CameraConfig(id="right", source=str(WALK_AND_PAUSE), line=RIGHT_LINE, in_side="right"),
        CameraConfig(id="short", source=str(WALK_AND_PAUSE), line=SHORT_LINE, in_side="left"),
    ]
    config = AgentConfig(cameras=cameras, people=PeopleConfig(enabled=False))
    models = load_models(config)
    pipelines = {c.id: CameraPipeline("dev", c.id, config, models) for c in cameras}
    first_x: dict[tuple[str, int], float] = {}  # (camera, track) -> x at first sight
    for frame in read_frames("clip", str(WALK_AND_PAUSE)):
        for camera_id, pipeline in pipelines.items():
            assert not pipeline.process(frame), "everybody is in view until the clip ends"
            for track in pipeline.tracker.faces.active:
                assert track.first_centre is not None
                first_x[camera_id, track.track_id] = track.first_centre[0]
    by_x: dict[str, list[Direction | None]] = {}
    for camera_id, pipeline in pipelines.items():
        ended = sorted(pipeline.finish(), key=lambda e: first_x[camera_id, e.track_id])
        by_x[camera_id] = [e.direction for e in ended]  # people left to right
    assert by_x["plain"] == [None, None, None]
    assert by_x["left"] == [Direction.OUT, None, None]
    assert by_x["right"] == [None, None, Direction.IN]
    assert by_x["short"] == [None, None, None]
