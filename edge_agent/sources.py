"""Frames from a video file, an RTSP/HTTP stream or a USB camera, through OpenCV.

A source yields :class:`Frame` records stamped in UTC. For a file the stamps follow the
media clock, anchored so that the clip ends "now" (so offline runs produce plausible,
never future, times); for live sources they are the wall clock at capture.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.timing import StageTimes


class SourceError(RuntimeError):
    """The source cannot be opened or read; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded RGB frame of one camera; ``t`` is seconds on the stream's clock."""

    camera_id: str
    index: int
    t: float
    wall: datetime
    rgb: NDArray[np.uint8]


def is_gstreamer(source: str) -> bool:
    """A GStreamer pipeline string (``... ! appsink``), opened with OpenCV's GStreamer backend."""
    return " ! " in source


def is_live(source: str) -> bool:
    """A camera or stream (reconnect when it drops) rather than a file (ends)."""
    return source.isdigit() or "://" in source or is_gstreamer(source)


def open_capture(source: str) -> cv2.VideoCapture:
    """Open ``source`` (a path, a URL or a USB index such as ``0``) or raise SourceError."""
    if not is_live(source) and not Path(source).is_file():
        raise SourceError(f"video file {source!r} does not exist")
    if is_gstreamer(source):
        capture = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
        if not capture.isOpened():
            raise SourceError(
                f"OpenCV cannot open the GStreamer pipeline {source!r} (is OpenCV built with "
                "GStreamer? opencv-python-headless wheels are not; use the system OpenCV)"
            )
        return capture
    if source.isdigit():
        capture = cv2.VideoCapture(int(source))
    else:
        # One decoding thread per camera: the cameras are the parallelism, and FFmpeg's
        # default (a thread per core for each stream) multiplies threads and buffers.
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not capture.isOpened():
        raise SourceError(
            f"OpenCV cannot open {source!r} (unsupported codec, bad URL or no camera)"
        )
    return capture


def frame_count(source: str) -> int | None:
    """Frames in a file source, when the container says; ``None`` for live sources."""
    if is_live(source):
        return None
    capture = open_capture(source)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        return count if count > 0 else None
    finally:
        capture.release()


def read_frames(
    camera_id: str,
    source: str,
    max_fps: float | None = None,
    times: StageTimes | None = None,
    realtime: bool = False,
    skip: Callable[[], bool] | None = None,
) -> Iterator[Frame]:
    """Yield frames until the source ends; frames above ``max_fps`` are skipped unread.

    Skipped frames are only grabbed, not converted. ``Frame.index`` counts the frames
    yielded, so a consumer that sees a gap knows it dropped frames. A file is read as fast
    as the consumer takes it, unless ``realtime``: then it is paced by its media clock, as
    a camera would deliver it (benchmarks, and looped files standing in for cameras).
    When ``skip`` says the consumer still has the previous frame, this one is grabbed but
    not converted and counts as dropped (its index is used up).
    """
    capture = open_capture(source)
    live = is_live(source)
    native_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    native_fps = native_fps if 0.0 < native_fps < 1000.0 else 25.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not live else 0
    anchor = datetime.now(UTC) - timedelta(seconds=0 if realtime else max(count, 0) / native_fps)
    started = time.monotonic()
    min_gap = 1.0 / max_fps if max_fps else 0.0
    next_t = 0.0
    index = -1  # frames yielded
    grabbed = -1
    times = times or StageTimes()
    try:
        while True:
            start = time.perf_counter()
            if not capture.grab():
                break
            grabbed += 1
            t = time.monotonic() - started if live else grabbed / native_fps
            if t + 1e-9 < next_t:
                continue
            if realtime and not live:
                ahead = t - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                    start += ahead  # waiting for the media clock is not decoding
            next_t = t + min_gap
            index += 1
            if skip is not None and skip():
                continue
            ok, bgr = capture.retrieve()
            if not ok:
                break
            rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
            times.add("decode", (time.perf_counter() - start) * 1000.0)
            wall = datetime.now(UTC) if live else anchor + timedelta(seconds=t)
            yield Frame(camera_id, index, t, wall, rgb)
    finally:
        capture.release()
