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


Variant = tuple[float, float, float, bool]
"""One test-time variant of a chip: (scale, dx, dy) as in ``JITTER``, and mirrored or not."""

IDENTITY: Final[Variant] = (1.0, 0.0, 0.0, False)
# 6% tighter: JITTER[2], the best single chip of the 14 for the age network on both halves
# of utkface_dev (docs/evaluation.md, "Test-time variants").
ZOOM: Final[Variant] = (1.06, 0.0, 0.0, False)

# Named sets of variants whose predictions are averaged (EstimatorConfig.variants).
VARIANT_SETS: Final[dict[str, tuple[Variant, ...]]] = {
    "none": (IDENTITY,),
    "zoom": (ZOOM,),
    "pair": (IDENTITY, ZOOM),
    "flip": (IDENTITY, (1.0, 0.0, 0.0, True)),
    "scale3": (IDENTITY, (0.94, 0.0, 0.0, False), ZOOM),
    "jitter7": tuple((*j, False) for j in JITTER),
    "full": tuple((*j, mirrored) for j in JITTER for mirrored in (False, True)),
}


def variant_set(variants: bool | str) -> tuple[Variant, ...]:
    """The variants of a set name; ``True`` is all 14 (``"full"``), ``False`` one plain chip."""
    if isinstance(variants, bool):
        variants = "full" if variants else "none"
    try:
        return VARIANT_SETS[variants]
    except KeyError:
        raise ValueError(f"unknown variants {variants!r}; one of {sorted(VARIANT_SETS)}") from None


def chip_variants(
    rgb: NDArray[np.uint8], landmarks: NDArray[np.floating], size: int, variants: bool | str
) -> list[NDArray[np.uint8]]:
    """The chips whose predictions are averaged, in the order of the named set.

    ``True`` gives all 14 (7 jitters, each followed by its mirror image), ``False`` just
    the plain chip. Flipping mirrors the face, which the networks should rate the same;
    averaging both cancels part of their left/right bias.
    """
    chips: list[NDArray[np.uint8]] = []
    plain: dict[tuple[float, float, float], NDArray[np.uint8]] = {}
    for scale, dx, dy, mirrored in variant_set(variants):
        jitter = (scale, dx, dy)
        if jitter not in plain:
            plain[jitter] = face_chip(rgb, landmarks, size, jitter)
        chip = plain[jitter]
        chips.append(np.ascontiguousarray(chip[:, ::-1]) if mirrored else chip)
    return chips


# face-api's crop (``alignedRect``: the box around its 68 landmarks, 10% added on every
# side) in the unit dlib chip (the 0.2-padded 0..1 frame ``template`` maps onto a chip).
# Measured, not assumed: the median over 998 lfw_gender_dev faces (no labels used) of the
# face mesh's jaw and brow points, which stand in for face-api's 68, in the frame that
# aligns each face's five points onto dlib's template (bench/faceapi_box.py).
FACEAPI_BOX: Final = (-0.0025, 0.0706, 0.9935, 1.0442)


def box_chip(
    rgb: NDArray[np.uint8],
    landmarks: NDArray[np.floating],
    size: int,
    box: tuple[float, float, float, float] = FACEAPI_BOX,
    variant: Variant = IDENTITY,
) -> NDArray[np.uint8]:
    """The face's ``box`` (unit dlib chip coordinates) upright in a ``[size, size, 3]``
    chip: padded to a square with black, centred, as face-api pads its crops
    (``padToSquare``), then scaled; ``variant`` jitters and mirrors it like the dlib chips.

    Upright, not axis-aligned like face-api's own crop: the five landmarks fix the roll,
    so a tilted head gives the same chip as a level one.
    """
    scale, dx, dy, mirrored = variant
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) / scale
    centre = np.array([(x0 + x1) / 2.0 - dx * side, (y0 + y1) / 2.0 - dy * side])
    unit = (DLIB_TEMPLATE + CHIP_PADDING) / (1 + 2 * CHIP_PADDING)
    big = size * SUPERSAMPLE
    points = ((unit - centre) / side + 0.5) * big
    matrix = similarity(landmarks, points)
    warped = cv2.warpAffine(
        rgb, matrix, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    # The bars padToSquare adds along the box's shorter side are black, not more image.
    bar_x = round((1.0 - (x1 - x0) / scale / side) / 2.0 * big)
    bar_y = round((1.0 - (y1 - y0) / scale / side) / 2.0 * big)
    if bar_x > 0:
        warped[:, :bar_x] = 0
        warped[:, big - bar_x :] = 0
    if bar_y > 0:
        warped[:bar_y] = 0
        warped[big - bar_y :] = 0
    chip = np.asarray(cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA), np.uint8)
    return np.ascontiguousarray(chip[:, ::-1]) if mirrored else chip
