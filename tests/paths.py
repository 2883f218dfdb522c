"""Where the shared evaluation data lives: ``../shared/data`` beside the repository."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VIDEO = SHARED_DATA / "video"
UTKFACE = SHARED_DATA / "faces" / "utkface_dev"
LFW = SHARED_DATA / "faces" / "lfw_gender_dev"
WALK_AND_PAUSE = VIDEO / "intel_face-demographics-walking-and-pause.mp4"
