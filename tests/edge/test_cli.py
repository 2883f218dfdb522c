"""``edge-agent`` as a user runs it: subprocesses on real clips and real face images."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
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


def test_analyze_control_clip_finds_nobody() -> None:
    """People with their backs to the camera: no faces, so no person events."""
    result = edge_agent("analyze", CONTROL_CLIP, "--quiet", "--fps", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    events = [PersonEvent.model_validate_json(x) for x in result.stdout.splitlines() if x]
    assert events == [], [
        e.model_dump(include={"track_id", "first_seen", "dwell_s"}) for e in events
    ]
    assert "0 people" in result.stderr


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
