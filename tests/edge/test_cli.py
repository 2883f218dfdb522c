"""``edge-agent`` as a user runs it: subprocesses on real clips and real face images."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import cv2

from edge_agent.cli import CSV_FIELDS
from edge_agent.contract import Gender, PersonEvent
from tests.paths import REPO, UTKFACE, VIDEO, WALK_AND_PAUSE

CONTROL_CLIP: Final = VIDEO / "intel_one-by-one-person-detection.mp4"


def edge_agent(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m edge_agent.cli ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=dict(os.environ),
    )


def test_analyze_prints_one_valid_event_per_person() -> None:
    result = edge_agent("analyze", WALK_AND_PAUSE, "--quiet", "--device-id", "shop-1")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 3, result.stdout
    events = [PersonEvent.model_validate_json(line) for line in lines]
    assert Counter(e.gender.value for e in events if e.gender) == {
        Gender.FEMALE: 2,
        Gender.MALE: 1,
    }
    for event in events:
        assert event.age is not None, event
        assert 15 <= event.age.value <= 70 and event.age.low <= event.age.value <= event.age.high
        assert event.device_id == "shop-1" and event.camera_id == "cam0"
        assert event.crops >= 1
        assert 0 < event.dwell_s <= 3.5  # the clip is 3.4 s long
        assert event.first_seen <= event.last_seen
        assert event.models  # which networks produced it
    assert len({e.event_id for e in events}) == 3
    assert len({e.track_id for e in events}) == 3
    assert "3 people" in result.stderr


def test_analyze_writes_csv(tmp_path: Path) -> None:
    out = tmp_path / "people.csv"
    result = edge_agent("analyze", WALK_AND_PAUSE, "--quiet", "--format", "csv", "--output", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == ""
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_FIELDS
    assert len(rows) == 4
    records = [dict(zip(CSV_FIELDS, row, strict=True)) for row in rows[1:]]
    assert Counter(r["gender"] for r in records) == {"female": 2, "male": 1}
    for record in records:
        assert float(record["age_low"]) <= float(record["age"]) <= float(record["age_high"])
        assert 0.5 <= float(record["gender_confidence"]) <= 1.0


def assert_clean_failure(result: subprocess.CompletedProcess[str], path: Path) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert str(path) in result.stderr, result.stderr[-3000:]
    assert result.stdout == ""


def test_analyze_missing_file_fails_cleanly(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-clip.mp4"
    result = edge_agent("analyze", missing, "--quiet")
    assert_clean_failure(result, missing)
    assert "does not exist" in result.stderr


def test_analyze_garbage_file_fails_cleanly(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-video.mp4"
    garbage.write_bytes(os.urandom(4096))
    result = edge_agent("analyze", garbage, "--quiet")
    assert_clean_failure(result, garbage)
    assert "cannot open" in result.stderr


def test_analyze_control_clip_counts_passers_by_not_watchers() -> None:
    """Six people with their backs to the camera, even at 2 frames a second: six
    passers-by, no watcher, no gender or age (no face was seen)."""
    result = edge_agent("analyze", CONTROL_CLIP, "--quiet", "--fps", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    events = [PersonEvent.model_validate_json(x) for x in result.stdout.splitlines() if x]
    assert len(events) == 6
    assert all(e.watcher is False and e.gender is None and e.attention_s == 0 for e in events)
    assert "6 people: 6 passers-by, 0 watchers" in result.stderr


def test_eval_prints_both_columns_and_writes_predictions(tmp_path: Path) -> None:
    predictions = tmp_path / "predictions.csv"
    result = edge_agent(
        "eval", UTKFACE, "--limit", "40", "--baseline", "--predictions", predictions
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = result.stdout
    for text in ("ours", "baseline", "gender accuracy", "age MAE", "40 images"):
        assert text in report, report
    with predictions.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40
    assert list(rows[0]) == ["file", "age", "gender"]
    labels = {r["file"] for r in csv.DictReader((UTKFACE / "labels.csv").open())}
    for row in rows:
        assert row["file"] in labels
        assert 0 <= float(row["age"]) <= 120
        assert row["gender"] in {"female", "male"}
    # The accuracy line has a percentage for each column.
    accuracy = next(line for line in report.splitlines() if "gender accuracy (all)" in line)
    assert accuracy.count("%") == 2


def test_demo_clip_is_playable_and_shows_one_person(tmp_path: Path) -> None:
    clip = tmp_path / "demo" / "first-run.mp4"
    made = edge_agent("demo-clip", clip)
    assert made.returncode == 0, made.stderr[-2000:]
    assert made.stdout.strip() == str(clip)
    capture = cv2.VideoCapture(str(clip))
    try:
        assert capture.isOpened()
        ok, frame = capture.read()
        assert ok and frame.shape == (360, 640, 3)
        assert capture.get(cv2.CAP_PROP_FRAME_COUNT) >= 50
    finally:
        capture.release()

    result = edge_agent("analyze", clip, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    events = [PersonEvent.model_validate_json(x) for x in result.stdout.splitlines() if x]
    assert len(events) == 1
    assert events[0].gender is not None and events[0].age is not None
    json.loads(result.stdout.splitlines()[0])  # plain JSON for any consumer


def test_analyze_a_directory_says_it_is_one(tmp_path: Path) -> None:
    result = edge_agent("analyze", tmp_path, "--quiet")
    assert_clean_failure(result, tmp_path)
    assert result.returncode == 2
    assert "is a directory; give a video file" in result.stderr
    assert "does not exist" not in result.stderr


# What OpenCV's and FFmpeg's own loggers print: "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d…] moov
# atom not found", "[h264 @ 0x…] Invalid NAL unit size", "[ WARN:0@0.07] global cap.cpp…".
NATIVE_LOG_LINE: Final = re.compile(
    r"\[[\w,]+ @ 0x[0-9a-f]+\]|\[ ?(WARN|ERROR|INFO)[:\]]|moov atom"
)


def test_analyze_broken_files_report_through_the_agent_not_ffmpeg(tmp_path: Path) -> None:
    """A truncated clip (its frames stop at 30 % of its bytes) and one whose index is
    missing (no moov atom): the agent's own one-line error, exit 2, and none of the
    decoders' lines on the terminal."""
    data = WALK_AND_PAUSE.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: int(len(data) * 0.3)])
    no_index = tmp_path / "no-index.mp4"
    no_index.write_bytes(data[: data.index(b"ftyp") + 28] + data[data.index(b"mdat") - 4 :])

    cut = edge_agent("analyze", truncated, "--quiet")
    assert cut.returncode == 2, cut.stderr[-2000:]
    assert "Traceback" not in cut.stderr
    assert f"edge-agent: {str(truncated)!r} stops at frame" in cut.stderr, cut.stderr
    assert "truncated or corrupt video" in cut.stderr
    assert not NATIVE_LOG_LINE.search(cut.stderr), cut.stderr
    # Who was seen in the frames that did decode is still reported, before the error.
    people = [PersonEvent.model_validate_json(x) for x in cut.stdout.splitlines() if x]
    assert f"{len(people)} people" in cut.stderr  # and stdout held nothing but events

    missing = edge_agent("analyze", no_index, "--quiet")
    assert_clean_failure(missing, no_index)
    assert "OpenCV cannot open" in missing.stderr
    assert not NATIVE_LOG_LINE.search(missing.stderr), missing.stderr

    # The same files with FFmpeg's logging asked for: the pattern does see its lines, so
    # their absence above is the silencing, not a pattern that matches nothing.
    loud = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "analyze", str(no_index), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "OPENCV_FFMPEG_LOGLEVEL": "32", "OPENCV_LOG_LEVEL": "INFO"},
    )
    # (OpenCV's FFmpeg callback, which that variable turns on, prints to stdout.)
    assert NATIVE_LOG_LINE.search(loud.stdout + loud.stderr), (loud.stdout, loud.stderr)


def _times(result: subprocess.CompletedProcess[str]) -> dict[int, tuple[datetime, datetime]]:
    assert result.returncode == 0, result.stderr[-2000:]
    events = [PersonEvent.model_validate_json(x) for x in result.stdout.splitlines() if x]
    assert len(events) == 3, result.stdout
    return {e.track_id: (e.first_seen, e.last_seen) for e in events}


def test_analyze_stamps_events_on_the_videos_own_timeline(tmp_path: Path) -> None:
    """first_seen/last_seen = start + frame position: the same every run, and --start
    moves them by exactly its difference. The clip records no creation time, so the
    start is its modification time minus its duration (41 frames at 12 fps)."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(WALK_AND_PAUSE.read_bytes())
    modified = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
    os.utime(clip, (modified.timestamp(), modified.timestamp()))
    capture = cv2.VideoCapture(str(clip))
    frames, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    assert (frames, fps) == (41, 12)
    start = modified - timedelta(seconds=frames / fps)

    first, second = (_times(edge_agent("analyze", clip, "--quiet")) for _ in range(2))
    assert first == second, "the same file gives the same times"
    for seen in first.values():
        for moment in seen:
            position = (moment - start).total_seconds() * fps
            assert 0 <= position <= frames - 1 + 1e-6, (moment, start)
            assert abs(position - round(position)) < 1e-3, "a time is a frame position"

    given = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    shifted = _times(edge_agent("analyze", clip, "--quiet", "--start", "2026-05-01T10:00:00Z"))
    later = _times(edge_agent("analyze", clip, "--quiet", "--start", "2026-05-01T12:30:00+02:00"))
    assert shifted.keys() == first.keys() == later.keys()
    for track, (first_seen, last_seen) in first.items():
        assert shifted[track] == (given + (first_seen - start), given + (last_seen - start))
        offset = timedelta(minutes=30)  # 12:30+02:00 is 10:30Z
        assert later[track] == (shifted[track][0] + offset, shifted[track][1] + offset)
