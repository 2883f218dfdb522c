"""Shared pieces of the edge agent's tests: verified model files and real face images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge_agent.vision.model_files import ModelFiles, locate_models
from tests.paths import UTKFACE


@pytest.fixture(scope="session")
def model_files() -> ModelFiles:
    """The built, sha256-verified model files (``python models/build.py`` makes them)."""
    return locate_models()


def utk_sample(count: int) -> list[Path]:
    """``count`` UTKFace chips spread evenly over the (age-sorted) folder, all ages and sexes."""
    files = sorted(UTKFACE.glob("*.jpg"))
    assert len(files) >= count, f"expected at least {count} face chips under {UTKFACE}"
    step = len(files) // count
    return files[::step][:count]


def read_rgb(path: Path) -> NDArray[np.uint8]:
    """An image file as RGB (grayscale files become three equal channels)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)


def pad_black(rgb: NDArray[np.uint8], pad: int) -> NDArray[np.uint8]:
    """``rgb`` in the middle of a black canvas ``pad`` pixels larger on every side."""
    return np.ascontiguousarray(
        cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    )
