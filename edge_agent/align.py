"""Face chips aligned the way dlib's ``get_face_chip_details`` aligns them.

The gender and age networks were trained on dlib face chips: a similarity transform
that maps five landmarks (four eye corners and the bottom of the nose) onto dlib's mean
face template, with 0.2 padding. Reproducing that geometry is what keeps their accuracy.

Two deliberate departures from a plain ``warpAffine``:
- the chip is rendered at twice its size and area-averaged down, which stands in for
  the image pyramid dlib uses when it shrinks a face, so small chips do not alias;
- optional test-time variants (small scale and shift jitter, horizontal flip) whose
  predictions are averaged, which makes the estimate less sensitive to landmark noise.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

# dlib's 5-point template (interpolation.h): image-right eye outer and inner corner,
# image-left eye outer and inner corner, bottom of the nose; in 0..1 chip units.
DLIB_TEMPLATE: Final = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    np.float64,
)
CHIP_PADDING: Final = 0.2
SUPERSAMPLE: Final = 2

# (scale, dx, dy) in chip units: identity first, then small perturbations.
JITTER: Final[tuple[tuple[float, float, float], ...]] = (
    (1.0, 0.0, 0.0),
    (0.94, 0.0, 0.0),
    (1.06, 0.0, 0.0),
    (1.0, 0.03, 0.0),
    (1.0, -0.03, 0.0),
    (1.0, 0.0, 0.03),
    (1.0, 0.0, -0.03),
)


def template(size: int, padding: float = CHIP_PADDING) -> NDArray[np.float64]:
    """The five template points in pixel coordinates of a ``size`` x ``size`` chip."""
    result: NDArray[np.float64] = (DLIB_TEMPLATE + padding) / (1 + 2 * padding) * size
    return result


def similarity(src: NDArray[np.floating], dst: NDArray[np.floating]) -> NDArray[np.float32]:
    """Least-squares similarity transform (rotation, uniform scale, shift) src -> dst.

    Umeyama's closed form without reflection, the same estimate dlib's
    ``find_similarity_transform`` computes; returns a 2x3 matrix for ``cv2.warpAffine``.
    """
    src64, dst64 = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src64.mean(axis=0), dst64.mean(axis=0)
    s, d = src64 - src_mean, dst64 - dst_mean
    norm = float((s**2).sum())
    if norm <= 1e-9:
        raise ValueError("landmarks are degenerate (all points coincide)")
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    rotation = np.array([[a, -b], [b, a]])
    shift = dst_mean - rotation @ src_mean
    return np.hstack([rotation, shift[:, None]]).astype(np.float32)


def face_chip(
    rgb: NDArray[np.uint8],
    landmarks: NDArray[np.floating],
    size: int,
    jitter: tuple[float, float, float] = (1.0, 0.0, 0.0),
    padding: float = CHIP_PADDING,
) -> NDArray[np.uint8]:
    """One aligned ``[size, size, 3]`` chip from five dlib-order landmarks.

    ``padding`` is dlib's: 0.2 for the attribute networks, 0.25 for the face-recognition
    network (``dlib.get_face_chip``'s default).
    """
    scale, dx, dy = jitter
    points = template(size, padding)
    centre = points.mean(axis=0)
    points = (points - centre) * scale + centre + np.array([dx, dy]) * size
    big = size * SUPERSAMPLE
    matrix = similarity(landmarks, points * SUPERSAMPLE)
    warped = cv2.warpAffine(
        rgb, matrix, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    chip = np.asarray(cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA), np.uint8)
    return chip


def chip_variants(
    rgb: NDArray[np.uint8], landmarks: NDArray[np.floating], size: int, tta: bool
) -> list[NDArray[np.uint8]]:
    """The chips whose predictions are averaged: all jitters and their mirror images.

    Without ``tta`` just the plain chip. Flipping mirrors the face, which the networks
    should rate the same; averaging both cancels part of their left/right bias.
    """
    jitters = JITTER if tta else JITTER[:1]
    chips: list[NDArray[np.uint8]] = []
    for jitter in jitters:
        chip = face_chip(rgb, landmarks, size, jitter)
        chips.append(chip)
        if tta:
            chips.append(np.ascontiguousarray(chip[:, ::-1]))
    return chips
