"""BlazeFace on real faces and on a clip with no faces; anchors and weighted NMS."""

from __future__ import annotations

from typing import Final

import numpy as np
import pytest

from edge_agent.camera.sources import read_frames
from edge_agent.vision.detections import LEFT_EYE, MOUTH, NOSE_TIP, RIGHT_EYE, Detections
from edge_agent.vision.face_detector import (
    BlazeFaceDetector,
    Variant,
    _SsdOptions,
    ssd_anchors,
    weighted_nms,
)
from edge_agent.vision.model_files import ModelFiles
from tests.edge.conftest import pad_black, read_rgb, utk_sample
from tests.paths import VIDEO

CONTROL_CLIP: Final = VIDEO / "intel_one-by-one-person-detection.mp4"
CONTROL_SECONDS: Final = 139.0
VARIANTS: Final[tuple[Variant, ...]] = ("short_range", "full_range")


@pytest.fixture(scope="module", params=VARIANTS)
def detector(request: pytest.FixtureRequest, model_files: ModelFiles) -> BlazeFaceDetector:
    variant: Variant = request.param
    return BlazeFaceDetector(model_files.detector(variant).path, variant)


@pytest.fixture(scope="module")
def padded_faces() -> list[np.ndarray]:
    """100 UTKFace chips (200x200, the face fills them) in a 400x400 black canvas."""
    return [pad_black(read_rgb(path), 100) for path in utk_sample(100)]


@pytest.fixture(scope="module")
def found(detector: BlazeFaceDetector, padded_faces: list[np.ndarray]) -> list[Detections]:
    return [detector.detect(image) for image in padded_faces]


def single(found: list[Detections]) -> list[Detections]:
    return [d for d in found if len(d) == 1]


def test_finds_exactly_one_face_on_nearly_every_chip(found: list[Detections]) -> None:
    counts = [len(d) for d in found]
    exactly_one = sum(c == 1 for c in counts)
    assert exactly_one >= 95, f"exactly one face in {exactly_one}/100; counts {counts}"
    assert max(counts) <= 2, "never more than a duplicate on a one-face image"


def test_faces_are_where_the_chip_was(found: list[Detections]) -> None:
    for d in single(found):
        x1, y1, x2, y2 = d.boxes[0]
        # The chip occupies 100..300 on both axes of the canvas.
        assert 100 <= (x1 + x2) / 2 <= 300 and 100 <= (y1 + y2) / 2 <= 300, d.boxes[0]
        assert 50 <= x1 < x2 <= 350 and 50 <= y1 < y2 <= 350, d.boxes[0]
        # The chip is tight, so the face box spans a good part of it.
        assert 0.3 * 200 <= x2 - x1 <= 1.2 * 200
        assert 0.6 <= d.scores[0] <= 1.0


def test_boxes_contain_their_keypoints(found: list[Detections]) -> None:
    for d in single(found):
        box, points = d.boxes[0], d.keypoints[0]
        for k in (RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH):
            x, y = points[k]
            assert box[0] <= x <= box[2] and box[1] <= y <= box[3], (k, box, points)


def test_subjects_right_eye_is_on_the_images_left(found: list[Detections]) -> None:
    faces = single(found)
    for d in faces:
        kp = d.keypoints[0]
        assert kp[RIGHT_EYE, 0] < kp[LEFT_EYE, 0]
        # Upright faces: eyes above the nose, nose above the mouth.
        assert max(kp[RIGHT_EYE, 1], kp[LEFT_EYE, 1]) < kp[NOSE_TIP, 1] < kp[MOUTH, 1]


def test_mirrored_face_swaps_the_eyes(
    detector: BlazeFaceDetector, padded_faces: list[np.ndarray]
) -> None:
    image = padded_faces[len(padded_faces) // 2]
    plain = detector.detect(image)
    mirrored = detector.detect(np.ascontiguousarray(image[:, ::-1]))
    assert len(plain) == len(mirrored) == 1
    width = image.shape[1]
    # Mirroring moves each keypoint to width - x; the eyes keep their image-left order.
    np.testing.assert_allclose(
        width - mirrored.keypoints[0, LEFT_EYE, 0], plain.keypoints[0, RIGHT_EYE, 0], atol=6
    )


def test_no_faces_on_most_frames_of_the_control_clip(detector: BlazeFaceDetector) -> None:
    """People seen from behind: an occasional false positive at most, never many.

    Measured on these 30 frames: short range 6, full range 1 with a detection.
    """
    per_frame = [
        len(detector.detect(frame.rgb))
        for frame in read_frames("control", str(CONTROL_CLIP), max_fps=30 / CONTROL_SECONDS)
    ]
    assert len(per_frame) >= 25
    with_faces = sum(n > 0 for n in per_frame)
    assert with_faces <= len(per_frame) / 3, f"faces on {with_faces}/{len(per_frame)} frames"
    assert max(per_frame) <= 1


def test_empty_frame_gives_empty_detections(detector: BlazeFaceDetector) -> None:
    result = detector.detect(np.zeros((270, 480, 3), np.uint8))
    assert len(result) == 0
    assert result.boxes.shape == (0, 4) and result.keypoints.shape == (0, 6, 2)


@pytest.mark.parametrize(("variant", "count"), [("short_range", 896), ("full_range", 2304)])
def test_anchor_counts(model_files: ModelFiles, variant: Variant, count: int) -> None:
    spec = model_files.detector(variant)
    options = _SsdOptions(
        spec.input_size, spec.strides, spec.interpolated_scale_aspect_ratio == 1.0
    )
    anchors = ssd_anchors(options)
    assert anchors.shape == (count, 2)
    assert spec.num_anchors == count
    assert (anchors > 0).all() and (anchors < 1).all()
    first_stride = spec.strides[0]
    cells = spec.input_size // first_stride
    np.testing.assert_allclose(anchors[0], [0.5 / cells, 0.5 / cells], rtol=1e-6)


def test_weighted_nms_blends_overlapping_boxes_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    keypoints = np.stack([np.full((6, 2), v, np.float32) for v in (2.0, 4.0, 55.0)])
    merged = weighted_nms(Detections(boxes, scores, keypoints))

    assert len(merged) == 2
    # Best first: the blended pair keeps its best score, the lone box is untouched.
    np.testing.assert_allclose(merged.scores, [0.9, 0.7])
    expected_box = (0.9 * boxes[1] + 0.6 * boxes[0]) / 1.5
    np.testing.assert_allclose(merged.boxes[0], expected_box, rtol=1e-5)
    np.testing.assert_allclose(merged.keypoints[0], (0.9 * 4.0 + 0.6 * 2.0) / 1.5, rtol=1e-5)
    np.testing.assert_allclose(merged.boxes[1], boxes[2])
    np.testing.assert_allclose(merged.keypoints[1], 55.0)


def test_weighted_nms_keeps_boxes_that_barely_overlap() -> None:
    boxes = np.array([[0, 0, 10, 10], [8, 0, 18, 10]], np.float32)  # IoU 20/180
    out = weighted_nms(
        Detections(boxes, np.array([0.8, 0.7], np.float32), np.zeros((2, 6, 2), np.float32))
    )
    assert len(out) == 2
    assert len(weighted_nms(Detections.empty())) == 0
