"""Faces go to the person whose head they are; frontal faces make watchers; a face-only
track that a person box takes over is counted once."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.config import PeopleConfig, TrackerConfig
from edge_agent.tracking.faces_on_people import assign_faces, frontal, observe_face
from edge_agent.tracking.people import FACE_ONLY_FIRST_ID, PeopleTracker, face_only
from edge_agent.tracking.tracker import Track
from edge_agent.vision.detections import Detections

FRAME = np.zeros((360, 640, 3), np.uint8)
SIZE = (640, 360)


def face_at(
    cx: float, cy: float, w: float = 30.0, yaw: float = 0.0, roll_deg: float = 0.0
) -> Detections:
    """One face centred at ``(cx, cy)``, ``w`` wide; ``yaw`` moves the nose along the eye
    line (in eye distances); ``roll_deg`` tilts the whole face."""
    eye = 0.4 * w
    points = np.array(
        [
            [-eye / 2, -0.1 * w],  # right eye (image left)
            [eye / 2, -0.1 * w],  # left eye
            [yaw * eye, 0.1 * w],  # nose tip
            [0.0, 0.3 * w],  # mouth
            [-0.5 * w, 0.0],  # right ear
            [0.5 * w, 0.0],  # left ear
        ]
    )
    a = np.deg2rad(roll_deg)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    points = points @ rotation.T + (cx, cy)
    box = np.array([[cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2]], np.float32)
    return Detections(box, np.array([0.9], np.float32), points[None].astype(np.float32))


def faces(*each: Detections) -> Detections:
    return Detections(
        np.concatenate([d.boxes for d in each]),
        np.concatenate([d.scores for d in each]),
        np.concatenate([d.keypoints for d in each]),
    )


def person(x1: float, y1: float, x2: float, y2: float, score: float = 0.9) -> Detections:
    return Detections.boxes_only(np.array([[x1, y1, x2, y2]], np.float32), np.array([score]))


def test_frontal_is_judged_by_turn_not_tilt() -> None:
    assert frontal(face_at(100, 100)).tolist() == [True]
    assert frontal(face_at(100, 100, roll_deg=35)).tolist() == [True]  # tilted, facing us
    assert frontal(face_at(100, 100, yaw=0.4)).tolist() == [False]  # turned away
    assert frontal(face_at(100, 100, yaw=0.4, roll_deg=-30)).tolist() == [False]
    assert frontal(Detections.empty()).tolist() == []


def test_each_face_goes_to_the_head_of_its_own_person() -> None:
    people = np.array([[100, 50, 180, 300], [160, 60, 240, 310]], np.float32)  # overlapping
    found = faces(face_at(200, 85), face_at(140, 80), face_at(400, 80), face_at(140, 280))
    # Right person's head, left person's head, nobody's, and a "face" at the left
    # person's knees (a bag, a print on a shirt): not a head.
    assert assign_faces(people, found).tolist() == [1, 0, -1, -1]


def test_one_face_per_person_per_frame() -> None:
    people = np.array([[100, 50, 180, 300]], np.float32)
    owner = assign_faces(people, faces(face_at(150, 90), face_at(138, 78)))
    assert sorted(owner.tolist()) == [-1, 0]
    assert owner[1] == 0  # the one nearer where the head should be


def test_attention_adds_frontal_time_capped() -> None:
    held = Track(1, 0.0, 0.0, np.zeros(4, np.float32))
    observe_face(held, True, 0.1)
    observe_face(held, False, 0.1)
    observe_face(held, True, 30.0)  # a stalled camera: at most half a second
    assert (held.faces_seen, held.frontal_seen) == (3, 2)
    assert held.attention_s == pytest.approx(0.6)


def walk(tracker: PeopleTracker, steps: int, *, with_face: bool, t0: float = 0.0) -> list[object]:
    """A person walking right at 15 fps with detections every frame."""
    ended: list[object] = []
    for i in range(steps):
        t = t0 + i / 15
        x = 100 + 4 * i
        ended += tracker.people_step(person(x, 60, x + 80, 320), t, SIZE)
        shown = face_at(x + 40, 90) if with_face else Detections.empty()
        ended += tracker.faces_step(shown, t, FRAME)
    return ended


def test_person_with_a_face_is_one_watcher_not_two() -> None:
    tracker = PeopleTracker(PeopleConfig(), TrackerConfig(), 24)
    walk(tracker, 30, with_face=True)
    assert tracker.in_view() == 1
    (gone,) = tracker.finish()
    assert not face_only(gone)
    assert gone.faces_seen == 30 and gone.frontal_seen == 30
    assert gone.attention_s == pytest.approx(29 / 15)
    assert len(gone.crops) == TrackerConfig().best_crops


def test_face_seen_before_the_person_box_is_merged_into_the_person() -> None:
    tracker = PeopleTracker(PeopleConfig(), TrackerConfig(), 24)
    # The face shows for 5 frames before the person detector finds anyone.
    for i in range(5):
        tracker.people_step(Detections.empty(), i / 15, SIZE)
        tracker.faces_step(face_at(140, 90), i / 15, FRAME)
    assert [t.track_id for t in tracker.faces.active] == [FACE_ONLY_FIRST_ID]
    walk(tracker, 20, with_face=True, t0=5 / 15)
    assert tracker.faces.active == []  # taken over
    (gone,) = tracker.finish()
    assert not face_only(gone) and gone.first_seen == 0.0
    assert gone.faces_seen == 25 and FACE_ONLY_FIRST_ID in gone.face_track_ids


def test_a_face_no_person_box_holds_is_a_person_of_its_own() -> None:
    tracker = PeopleTracker(PeopleConfig(), TrackerConfig(), 24)
    for i in range(10):  # a close-up face; the person detector sees nobody
        tracker.people_step(Detections.empty(), i / 15, SIZE)
        tracker.faces_step(face_at(300, 150, w=120), i / 15, FRAME)
    assert tracker.in_view() == 1
    (gone,) = tracker.finish()
    assert face_only(gone) and gone.frontal_seen == 10


def test_people_off_counts_faces_only() -> None:
    tracker = PeopleTracker(PeopleConfig(enabled=False), TrackerConfig(), 24)
    assert tracker.people is None
    assert tracker.people_step(person(0, 0, 10, 10), 0.0, SIZE) == []
    walk(tracker, 10, with_face=True)
    (gone,) = tracker.finish()
    assert face_only(gone)


def test_faces_are_looked_for_around_heads_only_when_that_is_small() -> None:
    tracker = PeopleTracker(PeopleConfig(), TrackerConfig(), 24)
    assert tracker.face_region(0.0, SIZE) is None and not tracker.anyone()
    walk(tracker, 3, with_face=False)
    region = tracker.face_region(3 / 15, SIZE)
    assert region is not None
    x1, y1, x2, y2 = region
    assert x1 < 108 / 640 and x2 > 188 / 640 and y1 < 60 / 360 and y2 < 320 / 360
    tracker.people_step(person(0, 0, 640, 360), 4 / 15, SIZE)  # someone fills the frame
    assert tracker.face_region(4 / 15, SIZE) is None


def test_a_face_in_a_box_that_is_never_confirmed_still_counts() -> None:
    """The person detector saw someone once (a tentative track, then nothing): their face,
    seen on every frame, is not lost with the box."""
    tracker = PeopleTracker(PeopleConfig(), TrackerConfig(), 24)
    tracker.people_step(person(100, 60, 180, 320), 0.0, SIZE)
    for i in range(6):
        if i == 3:
            tracker.people_step(Detections.empty(), i / 15, SIZE)
        tracker.faces_step(face_at(140, 90), i / 15, FRAME)
    (gone,) = tracker.finish()
    assert face_only(gone) and gone.faces_seen == 6
