"""The person detector on the hand-labelled frames of the shared clips (recall and precision
just under what bench/person_detector.py measured), on frames without people, and in frame
pixels whatever the frame's shape."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge_agent.vision.detections import Detections, iou_matrix
from edge_agent.vision.detector import Detector
from edge_agent.vision.model_files import ModelFiles
from edge_agent.vision.person_detector import PersonDetector, letterbox
from tests.paths import REPO, VIDEO

LABELS: Final = REPO / "tests" / "data" / "person_labels.json"
DEFAULT: Final = "nanodet_int8"  # PeopleConfig.model's default
LOW, HIGH = 0.25, 0.5  # the tracker's two thresholds (PeopleConfig)
# bench/person_detector.py, nanodet_int8 at 384 on 109 frames / 134 people: recall 100.0%
# (0.25) and 97.0% (0.5), precision 93.7% (0.25); floors a few boxes below that.
MIN_RECALL_LOW, MIN_RECALL_HIGH, MIN_PRECISION_LOW = 0.96, 0.90, 0.88


@dataclass(frozen=True)
class Labelled:
    clip: str
    index: int
    rgb: NDArray[np.uint8]
    boxes: NDArray[np.float32]
    difficult: NDArray[np.bool_]


def _read(clip: Path, wanted: set[int]) -> dict[int, NDArray[np.uint8]]:
    """Frames by index (sequential reads from the start, as the labels count them)."""
    capture, found, index = cv2.VideoCapture(str(clip)), {}, 0
    while index <= max(wanted):
        ok, bgr = capture.read()
        assert ok, f"{clip.name} ends before frame {index}"
        if index in wanted:
            found[index] = np.ascontiguousarray(bgr[..., ::-1], np.uint8)
        index += 1
    capture.release()
    return found


@pytest.fixture(scope="module")
def labelled() -> list[Labelled]:
    items = json.loads(LABELS.read_text(encoding="utf-8"))["frames"]
    out = []
    for clip in sorted({item["clip"] for item in items}):
        mine = [item for item in items if item["clip"] == clip]
        frames = _read(VIDEO / clip, {int(item["frame"]) for item in mine})
        for item in mine:
            people = item["people"]
            boxes = np.array([p["box"] for p in people], np.float32).reshape(-1, 4)
            difficult = np.array([p["difficult"] for p in people], bool)
            out.append(Labelled(clip, int(item["frame"]), frames[item["frame"]], boxes, difficult))
    return out


@pytest.fixture(scope="module")
def detector(model_files: ModelFiles) -> PersonDetector:
    return PersonDetector(model_files.person_detector(DEFAULT), score_threshold=LOW)


def _match(found: Detections, frame: Labelled) -> tuple[int, int, int]:
    """(hits, false positives, people) with greedy one-to-one matching at IoU 0.5; boxes on
    difficult people count neither way."""
    overlaps = iou_matrix(found.boxes, frame.boxes)
    taken = np.zeros(len(frame.boxes), bool)
    hits = false = 0
    for i in np.argsort(-found.scores, kind="stable"):
        free = np.where(taken | frame.difficult, -1.0, overlaps[i])
        best = int(np.argmax(free)) if len(free) else -1
        if best >= 0 and free[best] >= 0.5:
            taken[best], hits = True, hits + 1
        elif not (overlaps[i][frame.difficult] >= 0.5).any():
            false += 1
    return hits, false, int((~frame.difficult).sum())


def test_counts_the_labelled_people(detector: PersonDetector, labelled: list[Labelled]) -> None:
    totals = {LOW: np.zeros(3, int), HIGH: np.zeros(3, int)}
    for frame in labelled:
        found = detector.detect(frame.rgb)
        for threshold, total in totals.items():
            total += _match(found[found.scores >= threshold], frame)
    (hits, false, people), (high_hits, _, _) = totals[LOW], totals[HIGH]
    assert people >= 100, f"only {people} labelled people in {LABELS.name}"
    assert hits / people >= MIN_RECALL_LOW, f"recall {hits}/{people} at {LOW}"
    assert high_hits / people >= MIN_RECALL_HIGH, f"recall {high_hits}/{people} at {HIGH}"
    assert hits / (hits + false) >= MIN_PRECISION_LOW, f"{false} false boxes, {hits} hits"


def test_no_box_without_people(detector: PersonDetector, labelled: list[Labelled]) -> None:
    empty = [f for f in labelled if len(f.boxes) == 0]
    assert empty, "the labels have frames with nobody in view"
    frame = empty[0].rgb
    blurred = np.asarray(cv2.GaussianBlur(frame, (0, 0), 8), np.uint8)
    for image in (np.zeros_like(frame), blurred, frame):
        assert len(detector.detect(image)) == 0
    boxes = sum(len(detector.detect(f.rgb)) for f in empty)
    assert boxes == 0, f"{boxes} boxes at {LOW} on {len(empty)} frames without people"


def test_boxes_are_in_frame_pixels(detector: PersonDetector, labelled: list[Labelled]) -> None:
    """A portrait crop and a 2x frame give the labelled box, moved and scaled with them."""

    def narrow(f: Labelled) -> bool:  # one person, a portrait crop 40 px either side fits
        x1, _, x2, _ = f.boxes[0]
        return bool(x2 - x1 + 80 < f.rgb.shape[0] and x1 >= 40 and x2 + 40 <= f.rgb.shape[1])

    frame = next(f for f in labelled if len(f.boxes) == 1 and not f.difficult[0] and narrow(f))
    label = frame.boxes[0]
    left, right = int(label[0]) - 40, int(label[2]) + 40
    portrait: NDArray[np.uint8] = np.ascontiguousarray(frame.rgb[:, left:right])
    big = np.asarray(cv2.resize(frame.rgb, None, fx=2, fy=2), np.uint8)
    cases = ((portrait, label - [left, 0, left, 0], portrait.shape), (big, label * 2, big.shape))
    for image, expected, (height, width, _) in cases:
        found = detector.detect(image, HIGH)
        assert len(found) == 1 and found.keypoints.shape == (1, 0, 2)
        assert iou_matrix(found.boxes, np.asarray([expected], np.float32))[0, 0] >= 0.7
        assert (found.boxes >= 0).all() and (found.boxes[:, 2] <= width).all()
        assert (found.boxes[:, 3] <= height).all()


def test_is_a_detector_and_checks_its_input_size(model_files: ModelFiles) -> None:
    spec = model_files.person_detector(DEFAULT)
    detector: Detector = PersonDetector(spec)
    assert isinstance(detector.detect(np.zeros((90, 160, 3), np.uint8)), Detections)
    with pytest.raises(ValueError, match="multiple of 32"):
        PersonDetector(spec, input_size=300)
    with pytest.raises(FileNotFoundError, match="no person detector"):
        model_files.person_detector("yolo")
    assert model_files.person_detector("nanodet").input_size == spec.input_size == 384


def test_letterbox_keeps_the_aspect_ratio() -> None:
    canvas, scale = letterbox(np.full((270, 480, 3), 255, np.uint8), 384, 32)
    assert canvas.shape == (224, 384, 3) and scale == pytest.approx(0.8)
    assert canvas[:216].all() and not canvas[216:].any()
