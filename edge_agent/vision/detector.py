"""What the pipeline asks of a detector, whichever network is behind it.

The pipeline, the scheduler's detection workers and the tools are typed against
:class:`Detector`, not a concrete network: BlazeFace (``face_detector.py``) is one, and
another (a person detector) fits behind the same protocol as long as it returns
:class:`~edge_agent.vision.detections.Detections` in frame pixels.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.vision.detections import Detections


class Detector(Protocol):
    """Finds objects in one RGB frame of any size.

    One instance is used by one thread at a time (interpreters are not shared between
    threads), but by many cameras in turn, so each call says its own threshold.
    """

    def detect(self, rgb: NDArray[np.uint8], score_threshold: float | None = None) -> Detections:
        """Boxes, scores and keypoints in ``rgb``'s pixel coordinates, each scoring at
        least ``score_threshold`` (``None``: the threshold the detector was made with)."""
        ...


def detect_in_roi(
    detector: Detector,
    rgb: NDArray[np.uint8],
    roi: tuple[float, float, float, float] | None,
    score_threshold: float | None = None,
) -> Detections:
    """Detections in the frame, or only in its region of interest (frame fractions
    ``x1, y1, x2, y2``; the detector then sees it at full resolution), in frame pixel
    coordinates either way."""
    if roi is None:
        return detector.detect(rgb, score_threshold)
    height, width = rgb.shape[:2]
    x1, y1 = int(roi[0] * width), int(roi[1] * height)
    x2, y2 = max(x1 + 1, int(roi[2] * width)), max(y1 + 1, int(roi[3] * height))
    cropped = np.ascontiguousarray(rgb[y1:y2, x1:x2])
    return detector.detect(cropped, score_threshold).shifted(x1, y1)
