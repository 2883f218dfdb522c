"""A short synthetic clip with a real face, for first runs without a camera or data.

The face is scikit-image's ``data.astronaut()``: Eileen Collins' official NASA portrait,
public domain, shipped inside the scikit-image wheel, so nothing is downloaded. The
portrait walks in from the left, stops in front of the camera, and leaves to the right,
which exercises detection, tracking, the track's end and one published event.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

WIDTH, HEIGHT, FPS = 640, 360, 12
SECONDS = 5.0


def _background() -> NDArray[np.uint8]:
    ramp = np.linspace(60, 140, WIDTH, dtype=np.float32)
    grey = np.broadcast_to(ramp[None, :, None], (HEIGHT, WIDTH, 3))
    return np.ascontiguousarray(grey.astype(np.uint8))


def _portrait() -> NDArray[np.uint8]:
    from skimage import data  # imported here: only the first run needs scikit-image

    # Head and shoulders of the 512x512 portrait, scaled so the face is ~70 px wide.
    head = np.asarray(data.astronaut(), np.uint8)[20:340, 90:370]  # type: ignore[no-untyped-call]
    return np.ascontiguousarray(cv2.resize(head, (196, 224), interpolation=cv2.INTER_AREA))


def make_demo_clip(path: Path) -> Path:
    """Write the clip as MP4 (``mp4v``) to ``path`` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    portrait = _portrait()
    ph, pw = portrait.shape[:2]
    frames = int(SECONDS * FPS)
    background = _background()
    try:
        for i in range(frames):
            phase = i / (frames - 1)
            # Walk in (0-0.35), stand (0.35-0.65), walk out (0.65-1).
            if phase < 0.35:
                x = -pw + (WIDTH / 2 + pw / 2) * phase / 0.35
            elif phase < 0.65:
                x = WIDTH / 2 - pw / 2
            else:
                x = WIDTH / 2 - pw / 2 + (WIDTH / 2 + pw / 2) * (phase - 0.65) / 0.35
            frame = background.copy()
            left, top = round(x), HEIGHT - ph
            x1, x2 = max(0, left), min(WIDTH, left + pw)
            if x2 > x1:
                frame[top:, x1:x2] = portrait[:, x1 - left : x2 - left]
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def portrait() -> NDArray[np.uint8]:
    """The public-domain astronaut portrait as RGB head and shoulders, 196x224."""
    return _portrait()


def make_visit_clip(
    path: Path, visits: Sequence[tuple[NDArray[np.uint8], float, float]], seconds: float
) -> Path:
    """A still scene that people step into and out of: each visit is an RGB picture of a
    person, the second it appears and the second it leaves (centred, standing on the
    bottom edge). Looped, the clip is people who leave and come back (return tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    background = _background()
    try:
        for i in range(int(seconds * FPS)):
            frame = background.copy()
            for picture, start, end in visits:
                if start <= i / FPS < end:
                    ph, pw = picture.shape[:2]
                    left = WIDTH // 2 - pw // 2
                    frame[HEIGHT - ph :, left : left + pw] = picture
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
