"""Frames from a video file, an RTSP/HTTP stream or a USB camera, through OpenCV.

A source yields :class:`Frame` records. Each carries its time on the stream's clock
(``t``) and on the monotonic clock (``mono``), from which the agent's clock
(edge_agent/delivery/clock.py) makes wall times once the device's clock is set. For a live source
``mono`` is the moment of capture; for a file it follows the media clock, anchored so the
clip ends "now" (an offline run never produces future times). Given a ``start``, a file
is stamped on its own timeline instead (``edge-agent analyze``).

A file that is not there, cannot be opened, decodes no frame or stops short of the frame
count its container declares raises :class:`SourceError` with a ``reason``; a file that
simply ended does not. FFmpeg's own complaints about it are silenced (edge_agent/__init__.py).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Final, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.delivery.clock import SYSTEM_CLOCK, AgentClock
from edge_agent.timing import StageTimes

SourceReason = Literal["missing", "not_a_file", "unopenable", "no_frames", "truncated", "decode"]

#: A file that stops more than this many frames (or this share of them) short of the
#: count its container declares is broken, not ended.
TRUNCATED_FRAMES: Final = 2
TRUNCATED_SHARE: Final = 0.02


class SourceError(RuntimeError):
    """The source cannot be opened or read; the message says which and why, ``reason``
    says it in one word (``missing``, ``not_a_file``, ``unopenable``, ``no_frames``,
    ``truncated``, ``decode``) for logs and metrics."""

    def __init__(self, message: str, reason: SourceReason = "unopenable") -> None:
        super().__init__(message)
        self.reason: SourceReason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded RGB frame of one camera: ``t`` is seconds on the stream's clock,
    ``mono`` the same instant on the monotonic clock, ``wall`` its time on the media's
    own timeline when the reader was given one (offline analysis), else ``None``."""

    camera_id: str
    index: int
    t: float
    mono: float
    wall: datetime | None
    rgb: NDArray[np.uint8]


def is_gstreamer(source: str) -> bool:
    """A GStreamer pipeline string (``... ! appsink``), opened with OpenCV's GStreamer backend."""
    return " ! " in source


def is_live(source: str) -> bool:
    """A camera or stream (reconnect when it drops) rather than a file (ends)."""
    return source.isdigit() or "://" in source or is_gstreamer(source)


def open_capture(source: str) -> cv2.VideoCapture:
    """Open ``source`` (a path, a URL or a USB index such as ``0``) or raise SourceError."""
    if not is_live(source):
        path = Path(source)
        if path.is_dir():
            raise SourceError(f"{source!r} is a directory; give a video file", "not_a_file")
        if not path.exists():
            raise SourceError(f"video file {source!r} does not exist", "missing")
        if not path.is_file():
            raise SourceError(f"{source!r} is not a regular file; give a video file", "not_a_file")
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
        what = "a broken or truncated video file" if not is_live(source) else "bad URL or no camera"
        raise SourceError(f"OpenCV cannot open {source!r} (unsupported codec, {what})")
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
    *,
    start: datetime | None = None,
    clock: AgentClock = SYSTEM_CLOCK,
) -> Iterator[Frame]:
    """Yield frames until the source ends; frames above ``max_fps`` are skipped unread.

    Skipped frames are only grabbed, not converted. ``Frame.index`` counts the frames
    yielded, so a consumer that sees a gap knows it dropped frames. A file is read as fast
    as the consumer takes it, unless ``realtime``: then it is paced by its media clock, as
    a camera would deliver it (benchmarks, and looped files standing in for cameras).
    When ``skip`` says the consumer still has the previous frame, this one is grabbed but
    not converted and counts as dropped (its index is used up). ``start``: the wall time of
    a file's first frame (its frames get ``wall = start + t``).

    Raises :class:`SourceError` when a file decodes no frame or stops short of its frame
    count (truncated, corrupt), after yielding the frames it could decode.
    """
    capture = open_capture(source)
    live = is_live(source)
    native_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    native_fps = native_fps if 0.0 < native_fps < 1000.0 else 25.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not live else 0
    opened = clock.monotonic()
    # A file's media clock on the monotonic clock: the clip ends "now" unless paced.
    anchor = opened - (0.0 if realtime else max(count, 0) / native_fps)
    paced_from = time.monotonic()
    min_gap = 1.0 / max_fps if max_fps else 0.0
    next_t = 0.0
    index = -1  # frames yielded
    grabbed = -1
    times = times or StageTimes()
    try:
        while True:
            begin = time.perf_counter()
            if not capture.grab():
                break
            grabbed += 1
            if live:
                mono = clock.monotonic()
                t = mono - opened
            else:
                t = grabbed / native_fps
                mono = anchor + t
            if t + 1e-9 < next_t:
                continue
            if realtime and not live:
                ahead = t - (time.monotonic() - paced_from)
                if ahead > 0:
                    time.sleep(ahead)
                    begin += ahead  # waiting for the media clock is not decoding
            next_t = t + min_gap
            index += 1
            if skip is not None and skip():
                continue
            ok, bgr = capture.retrieve()
            if not ok:
                if live:
                    break  # a stream that stops mid-frame has dropped: reconnect
                raise SourceError(
                    f"{source!r}: frame {grabbed + 1} cannot be decoded (corrupt video)",
                    "decode",
                )
            rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
            times.add("decode", (time.perf_counter() - begin) * 1000.0)
            wall = None if start is None else start + timedelta(seconds=t)
            yield Frame(camera_id, index, t, mono, wall, rgb)
    finally:
        capture.release()
    if not live:
        _check_complete(source, grabbed + 1, count)


def _check_complete(source: str, decoded: int, declared: int) -> None:
    """Tell a file that ended from one that broke: no frame at all, or fewer than its
    container declares (FFmpeg stops quietly at the first undecodable packet)."""
    if decoded == 0:
        raise SourceError(
            f"{source!r} opens but has no decodable frame (corrupt or truncated video)",
            "no_frames",
        )
    if declared > 0 and declared - decoded > max(TRUNCATED_FRAMES, TRUNCATED_SHARE * declared):
        raise SourceError(
            f"{source!r} stops at frame {decoded} of the {declared} its container declares "
            "(truncated or corrupt video)",
            "truncated",
        )


def file_start(path: Path) -> tuple[datetime, str]:
    """When a video file's first frame was recorded, as well as the file tells, and how
    it was found: the creation time the container records (MP4/MOV ``mvhd``), else the
    file's modification time minus its duration (a recorder writes the file as it records,
    so the last write is about the last frame; a copy that did not keep the time moves it).
    """
    recorded = recorded_start(path)
    if recorded is not None:
        return recorded, "recorded creation time"
    capture = open_capture(str(path))
    try:
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    duration = count / fps if count > 0 and 0.0 < fps < 1000.0 else 0.0
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return modified - timedelta(seconds=duration), "modification time minus duration"


# Seconds from the MP4/QuickTime epoch (1904-01-01) to the Unix epoch.
_MP4_EPOCH_OFFSET: Final = 2_082_844_800


def recorded_start(path: Path) -> datetime | None:
    """The creation time an MP4/MOV file records (its ``moov/mvhd`` box), or ``None``.

    Only box headers are read (a few reads however large the file). ``0``, the value
    writers put when they know no time, counts as none; so does a file that is not
    MP4/MOV or that ends before its ``mvhd``. The field is UTC by the specification
    (some cameras write local time; ``edge-agent analyze --start`` overrides it).
    """
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            moov = _find_box(handle, b"moov", 0, size)
            if moov is None:
                return None
            mvhd = _find_box(handle, b"mvhd", moov[0], moov[1])
            if mvhd is None:
                return None
            handle.seek(mvhd[0])
            head = handle.read(12)
    except OSError:
        return None
    if len(head) < 12:
        return None
    version = head[0]
    if version == 0:
        created = struct.unpack(">I", head[4:8])[0]
    else:
        created = struct.unpack(">Q", head[4:12])[0]
    seconds = created - _MP4_EPOCH_OFFSET
    if created == 0 or not 0 < seconds < 2**35:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _find_box(handle: BinaryIO, kind: bytes, begin: int, end: int) -> tuple[int, int] | None:
    """(payload start, box end) of the first box of ``kind`` between ``begin`` and ``end``."""
    at = begin
    while at + 8 <= end:
        handle.seek(at)
        header = handle.read(16)
        if len(header) < 8:
            return None
        size, name = struct.unpack(">I4s", header[:8])
        skip = 8
        if size == 1:
            if len(header) < 16:
                return None
            size, skip = struct.unpack(">Q", header[8:16])[0], 16
        elif size == 0:
            size = end - at  # to the end of the enclosing box (or file)
        if size < skip:
            return None
        if name == kind:
            return at + skip, min(at + size, end)
        at += size
    return None
