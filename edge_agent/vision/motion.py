"""Did anything move? A cheap test that lets a camera skip detection on a still scene.

The frame is shrunk to a thumbnail (area averaging, which also evens out sensor and
compression noise) and compared with the thumbnail of the last frame that moved, not
simply the previous one: someone walking slowly changes little from one frame to the
next, but their change adds up against a reference that stays put until it is exceeded.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

THUMB_SIZE: Final = (80, 45)  # width, height
# A thumbnail pixel changed when it differs by more than this (0..255) ...
PIXEL_CHANGE: Final = 12
# ... and the scene moved when more than this share of the thumbnail changed.
MOVED_SHARE: Final = 0.002
# Re-take the reference this often even on a still scene (slow light changes).
REFRESH_S: Final = 10.0


class MotionGate:
    """One camera's motion test; ``moved`` once per frame, in order."""

    def __init__(self) -> None:
        self._reference: NDArray[np.int16] | None = None
        self._taken_at = 0.0

    def moved(self, rgb: NDArray[np.uint8], now: float) -> bool:
        """Whether ``rgb`` differs from the reference (the first frame always has)."""
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.int16)
        reference = self._reference
        if reference is None or now - self._taken_at >= REFRESH_S or now < self._taken_at:
            self._take(thumb, now)
            return True
        changed = float(np.mean(np.abs(thumb - reference) > PIXEL_CHANGE))
        if changed > MOVED_SHARE:
            self._take(thumb, now)
            return True
        return False

    def _take(self, thumb: NDArray[np.int16], now: float) -> None:
        self._reference = thumb
        self._taken_at = now
