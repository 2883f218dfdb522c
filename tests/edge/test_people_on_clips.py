"""People counted on real clips against the hand count in tests/data/clip_truth.json.

The one-by-one clip is the control for people who never face the camera: six people
walk in from under the camera, one at a time, with their backs to it. Its counting line
(horizontal at 95% of the height, the upper side "in") was placed by hand where every
person's foot point crosses it; each person crosses it once, going in, and leaves
through the right edge without crossing back (see docs/evaluation.md, "Person labels").
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest

from edge_agent.camera.sources import read_frames
from edge_agent.config import AgentConfig, CameraConfig
from edge_agent.contract import Direction, PersonEvent, event_watcher
from edge_agent.pipeline import CameraPipeline, load_models
from tests.paths import REPO, VIDEO, WALK_AND_PAUSE

ONE_BY_ONE = VIDEO / "intel_one-by-one-person-detection.mp4"
START = datetime(2026, 1, 1, tzinfo=UTC)


def truth(clip: str) -> dict[str, Any]:
    clips = json.loads((REPO / "tests" / "data" / "clip_truth.json").read_text())["clips"]
    found: dict[str, Any] = next(c for c in clips if c["clip"] == clip)
    return found


@cache
def analyse(clip: str, line_y: float | None = None) -> tuple[PersonEvent, ...]:
    """Every event of one pass over ``clip`` with the default configuration (and a
    horizontal counting line whose upper side is in), on the clip's own timeline."""
    line = None if line_y is None else ((0.0, line_y), (1.0, line_y))
    camera = CameraConfig(id="cam", source=str(VIDEO / clip), line=line, in_side="left")
    config = AgentConfig(cameras=[camera])
    pipeline = CameraPipeline("dev", "cam", config, load_models(config))
    events: list[PersonEvent] = []
    for frame in read_frames("cam", camera.source, start=START):
        events += pipeline.process(frame)
    events += pipeline.finish()
    return tuple(sorted(events, key=lambda e: e.first_seen))


def seconds(moment: datetime) -> float:
    return (moment - START).total_seconds()


def test_people_with_their_backs_to_the_camera_are_counted_and_cross_in() -> None:
    expected = truth(ONE_BY_ONE.name)
    line = expected["counting_line"]
    events = analyse(ONE_BY_ONE.name, line["y"])
    assert len(events) == expected["people"] == 6
    assert sum(event_watcher(e) for e in events) == expected["watchers"] == 0
    assert all(e.gender is None and e.age is None and e.crops == 0 for e in events)
    fps = expected["fps"]
    crossed = {c["id"]: c for c in line["crossings"]}
    for event, person in zip(events, expected["persons"], strict=True):
        # Each event is the hand-labelled person in view at that time ...
        first, last = person["first_frame"] / fps, person["last_frame"] / fps
        assert first - 1.0 <= seconds(event.first_seen) <= first + 2.0, (event, person)
        assert last - 2.0 <= seconds(event.last_seen) <= last + 1.5, (event, person)
        # ... and went the way the labels say across the line.
        assert event.direction == Direction(crossed[person["id"]]["direction"]) == Direction.IN


def test_walking_and_pause_three_watchers_two_women_one_man() -> None:
    expected = truth(WALK_AND_PAUSE.name)
    events = analyse(WALK_AND_PAUSE.name)
    assert len(events) == expected["people"] == 3
    assert all(event_watcher(e) for e in events)
    assert all(0 < (e.attention_s or 0) <= e.dwell_s for e in events)
    genders = sorted(e.gender.value.value for e in events if e.gender)
    assert genders == ["female", "female", "male"]


@pytest.mark.parametrize(
    "clip",
    [
        "intel_face-demographics-walking.mp4",
        "intel_head-pose-face-detection-female.mp4",
        "intel_head-pose-face-detection-male.mp4",
    ],
)
def test_other_clips_count_the_hand_counted_people(clip: str) -> None:
    expected = truth(clip)
    events = analyse(clip)
    assert len(events) == expected["people"]
    assert sum(event_watcher(e) for e in events) == expected["watchers"]


def test_a_reopened_source_is_watched_again_from_its_first_frame() -> None:
    """A looped file or a reconnected camera starts its clock at 0 again: the second pass
    finds the same people (person detection was once never due again)."""
    config = AgentConfig(cameras=[CameraConfig(id="cam", source=str(WALK_AND_PAUSE))])
    pipeline = CameraPipeline("dev", "cam", config, load_models(config))
    passes = []
    for _ in range(2):
        events: list[PersonEvent] = []
        for frame in read_frames("cam", str(WALK_AND_PAUSE), start=START):
            events += pipeline.process(frame)
        events += pipeline.finish()
        passes.append(len(events))
    assert passes == [3, 3]
