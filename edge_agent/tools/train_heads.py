"""``edge-agent train-heads``: gender and age heads on the face embedding, in minutes on a CPU.

From folders with ``labels.csv`` (``file,age,gender[,age_group]``, as ``edge-agent eval``
reads them): every image's central face goes through what the device runs (detector,
face mesh, dlib's chips and networks with the fused set's calibration, and the
face-recognition embedding); then, with scikit-learn:

- **gender**: a logistic regression on the standardised embedding;
- **age**: a multinomial logistic regression over FairFace's nine age groups (0-2, 3-9,
  ..., 70+). The groups are what the one trainable set here is labelled in, and with 30
  faces per group a linear softmax is as much as the data supports; an ordinal model
  would add an assumption the fusion does not need (the product with dlib's
  distribution already favours neighbouring groups).

Each head's regularisation ``C`` is chosen by stratified k-fold cross-validated log loss.
The figures it prints are nested cross-validated (``C`` chosen inside each outer fold's
training part), and the out-of-fold predictions are what the fusion exponents
(``heads.Fusion``) are fitted on by likelihood, so those never see in-sample head outputs;
the fused figures are cross-fitted over the same folds (each fold scored with exponents
fitted on the others). The heads, refitted on every face, are written as one ONNX graph
(``MatMul``, ``Add``, ``Softmax`` per head, the scaler folded into the weights) with
fixed names, opset and producer, so the same features give the same bytes; a JSON
fragment beside it holds the manifest entry's fitted parts and the figures.

scikit-learn, SciPy and onnx are training-time dependencies (the ``train`` extra); the
device runs the file with onnxruntime and NumPy (``vision/heads.py``).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import AgentConfig
from edge_agent.pipeline import load_models
from edge_agent.tools import evaluate
from edge_agent.tools.eval_metrics import AGE_GROUPS, age_group
from edge_agent.tools.heads_onnx import INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAMES, heads_onnx
from edge_agent.vision.calibration import CALIBRATION, finish
from edge_agent.vision.embedding import FaceEmbedder
from edge_agent.vision.estimator import DemographicsEstimator
from edge_agent.vision.heads import (
    class_groups,
    fuse_age,
    fuse_gender,
    group_classes,
    spread_groups,
)
from edge_agent.vision.model_sets import HEADS, HEADS_EMBEDDING, MODEL_SETS

FUSED_SET: Final = "dlib-heads"
BASE_SET: Final = "dlib-mixed"  # the set whose members the fused set shares
# Half-decades; the chosen C has been 0.01-0.03 on fairface_dev, inside the grid.
C_GRID: Final = tuple(float(c) for c in np.logspace(-3, 0, 7))
FOLDS: Final = 5
SEED: Final = 0
GENDER_LABELS: Final = ("female", "male")
OLDEST: Final = 200.0  # the last group's upper bound: everyone older
MAX_EXPONENT: Final = 5.0


def group_bounds() -> list[tuple[str, float, float]]:
    """FairFace's groups as (label, youngest, oldest) in years."""
    bounds = []
    for label in AGE_GROUPS:
        if label.endswith("+"):
            bounds.append((label, float(label[:-1]), OLDEST))
        else:
            low, high = label.split("-")
            bounds.append((label, float(low), float(high)))
    return bounds


@dataclass(frozen=True, slots=True)
class Features:
    """What the heads and the fusion learn from, per face."""

    files: list[str]
    embeddings: NDArray[np.float32]  # [N, 128], unit length
    dlib_gender: NDArray[np.float32]  # [N, 2] calibrated (the fused set's calibration)
    dlib_age: NDArray[np.float32]  # [N, 81] calibrated
    male: NDArray[np.int64]  # 1 male, 0 female, -1 unknown
    group: NDArray[np.int64]  # index into AGE_GROUPS, -1 unknown
    missed: int


def extract(
    folders: Sequence[Path], progress: Callable[[int], object] = lambda _: None
) -> tuple[Features, tuple[float, ...]]:
    """Every labelled face's embedding and calibrated dlib outputs, found as ``eval``
    finds them; and the age classes."""
    config = AgentConfig.model_validate(
        {
            "detector": {"model": "short_range", "score_threshold": 0.5},
            "estimator": {"models": BASE_SET},
        }
    )
    models = load_models(config)
    base = models.estimator
    estimator = DemographicsEstimator(
        base.landmarker, base.members, base.class_ages, CALIBRATION[FUSED_SET]
    )
    embedder = FaceEmbedder.from_model_files(models.files, HEADS_EMBEDDING)
    files: list[str] = []
    embeddings, genders, ages = [], [], []
    male: list[int] = []
    group: list[int] = []
    missed = 0
    for folder in folders:
        rows = evaluate.read_labels(folder)
        for start in range(0, len(rows), evaluate.BATCH):
            batch = rows[start : start + evaluate.BATCH]
            crops, no_face = evaluate.face_crops(models, folder, batch)
            missed += no_face
            landmarks, _, outputs = estimator.raw(crops)
            members = [m.member for m in estimator.members]
            gender, age = finish(members, outputs, estimator.calibration, estimator.class_ages)
            genders.append(gender)
            ages.append(age)
            embeddings.append(embedder.embed([c.image for c in crops], landmarks))
            for row in batch:
                files.append(f"{folder.name}/{row.file}")
                male.append({"male": 1, "female": 0}.get(row.gender or "", -1))
                label = row.age_group or (age_group(row.age) if row.age is not None else None)
                group.append(AGE_GROUPS.index(label) if label else -1)
            progress(len(batch))
    features = Features(
        files,
        np.concatenate(embeddings),
        np.concatenate(genders),
        np.concatenate(ages),
        np.asarray(male, np.int64),
        np.asarray(group, np.int64),
        missed,
    )
    return features, base.class_ages


# ---------------------------------------------------------------------------- fitting


def make_head(c: float) -> Any:
    """A standardising scaler and an L2 logistic regression (multinomial for > 2 classes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=10_000, tol=1e-6))


def _folds(y: NDArray[np.int64], k: int) -> list[tuple[NDArray[np.intp], NDArray[np.intp]]]:
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=SEED)
    return list(splitter.split(np.zeros(len(y)), y))


def _log_loss(probs: NDArray[np.floating], y: NDArray[np.int64]) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0))))


def choose_c(x: NDArray[np.float32], y: NDArray[np.int64], k: int) -> float:
    """The ``C`` of the grid with the lowest k-fold cross-validated log loss."""
    folds = _folds(y, k)
    losses = []
    for c in C_GRID:
        probs = np.zeros((len(y), int(y.max()) + 1))
        for train, test in folds:
            probs[test] = make_head(c).fit(x[train], y[train]).predict_proba(x[test])
        losses.append(_log_loss(probs, y))
    return C_GRID[int(np.argmin(losses))]


@dataclass(slots=True)
class HeadFit:
    """One head: its final model, the chosen ``C``, and nested out-of-fold predictions."""

    model: Any
    c: float
    oof: NDArray[np.float64]  # [n, classes]
    fold: NDArray[np.int64]  # outer fold of each labelled face
    fold_cs: list[float] = field(default_factory=list)


def fit_head(x: NDArray[np.float32], y: NDArray[np.int64], k: int) -> HeadFit:
    """Nested cross-validation (outer ``k`` folds, ``C`` chosen inside each), then the
    head refitted on everything with ``C`` chosen on everything."""
    oof = np.zeros((len(y), int(y.max()) + 1))
    fold = np.zeros(len(y), np.int64)
    fold_cs = []
    for i, (train, test) in enumerate(_folds(y, k)):
        c = choose_c(x[train], y[train], k)
        fold_cs.append(c)
        oof[test] = make_head(c).fit(x[train], y[train]).predict_proba(x[test])
        fold[test] = i
    c = choose_c(x, y, k)
    return HeadFit(make_head(c).fit(x, y), c, oof, fold, fold_cs)


def gender_nll(male: NDArray[np.floating], y: NDArray[np.int64]) -> float:
    p = np.clip(np.asarray(male, np.float64), 1e-15, 1 - 1e-15)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log(1 - p))))


def age_nll(classes: NDArray[np.floating], y: NDArray[np.int64], index: NDArray[np.int64]) -> float:
    groups = class_groups(classes, index, len(AGE_GROUPS))
    return _log_loss(groups, y)


def fit_exponents(loss: Callable[[tuple[float, float]], float]) -> tuple[float, float]:
    """The (head, dlib) exponents in [0, MAX_EXPONENT] that minimise ``loss``."""
    from scipy.optimize import minimize

    result = minimize(
        lambda w: loss((float(w[0]), float(w[1]))),
        x0=np.array([1.0, 1.0]),
        method="L-BFGS-B",
        bounds=[(0.0, MAX_EXPONENT), (0.0, MAX_EXPONENT)],
    )
    return round(float(result.x[0]), 4), round(float(result.x[1]), 4)


# ---------------------------------------------------------------------------- figures


def gender_figures(male: NDArray[np.floating], y: NDArray[np.int64]) -> dict[str, float]:
    """Accuracy, balanced accuracy and log loss of male probabilities."""
    said = (np.asarray(male) >= 0.5).astype(np.int64)
    recalls = [float(np.mean(said[y == c] == c)) for c in (0, 1) if (y == c).any()]
    return {
        "accuracy": float(np.mean(said == y)),
        "balanced_accuracy": float(np.mean(recalls)),
        "nll": gender_nll(male, y),
    }


def age_figures(
    classes: NDArray[np.floating],
    y: NDArray[np.int64],
    class_ages: Sequence[float],
    index: NDArray[np.int64],
) -> dict[str, float]:
    """Group accuracy of the expected age (what ``eval`` scores and an event publishes),
    off-by-one group accuracy, accuracy of the likeliest group, and group log loss."""
    expected = np.asarray(classes, np.float64) @ np.asarray(class_ages, np.float64)
    said = np.array([AGE_GROUPS.index(age_group(a)) for a in expected])
    likeliest = class_groups(classes, index, len(AGE_GROUPS)).argmax(axis=1)
    return {
        "group_accuracy": float(np.mean(said == y)),
        "off_by_one": float(np.mean(np.abs(said - y) <= 1)),
        "likeliest_group_accuracy": float(np.mean(likeliest == y)),
        "nll": age_nll(classes, y, index),
    }


@dataclass(slots=True)
class Trained:
    """What ``train`` produced: the heads, the fusion exponents and every figure."""

    gender: HeadFit
    age: HeadFit
    fusion_gender: tuple[float, float]
    fusion_age: tuple[float, float]
    figures: dict[str, dict[str, dict[str, float]]]  # head -> source -> metric
    features: Features
    class_ages: tuple[float, ...]
    extract_s: float = 0.0
    fit_s: float = 0.0


def train(features: Features, class_ages: tuple[float, ...], k: int = FOLDS) -> Trained:
    """Fit both heads and the fusion exponents; every figure cross-validated. One BLAS
    thread: as fast here (the problems are tiny) and the same sums in the same order."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _train(features, class_ages, k)


def _train(features: Features, class_ages: tuple[float, ...], k: int) -> Trained:
    started = time.perf_counter()
    index = group_classes(group_bounds(), class_ages)
    x = features.embeddings
    figures: dict[str, dict[str, dict[str, float]]] = {}

    g_sel = np.flatnonzero(features.male >= 0)
    y_g = features.male[g_sel]
    gender = fit_head(x[g_sel], y_g, k)
    head_male, dlib_male = gender.oof[:, 1], features.dlib_gender[g_sel, 1].astype(np.float64)

    def g_loss(w: tuple[float, float], rows: NDArray[np.bool_]) -> float:
        return gender_nll(fuse_gender(head_male[rows], dlib_male[rows], w)[:, 1], y_g[rows])

    everyone = np.ones(len(y_g), bool)
    fusion_gender = fit_exponents(lambda w: g_loss(w, everyone))
    fused_male = np.zeros(len(y_g))
    for i in range(k):  # cross-fitted: each fold's exponents fitted on the other folds
        here = gender.fold == i
        w = fit_exponents(functools.partial(g_loss, rows=~here))
        fused_male[here] = fuse_gender(head_male[here], dlib_male[here], w)[:, 1]
    figures["gender"] = {
        "dlib-mixed": gender_figures(dlib_male, y_g),
        "heads": gender_figures(head_male, y_g),
        FUSED_SET: gender_figures(fused_male, y_g),
    }

    a_sel = np.flatnonzero(features.group >= 0)
    y_a = features.group[a_sel]
    age = fit_head(x[a_sel], y_a, k)
    head_classes = spread_groups(age.oof, index)
    dlib_age = features.dlib_age[a_sel].astype(np.float64)

    def a_loss(w: tuple[float, float], rows: NDArray[np.bool_]) -> float:
        return age_nll(fuse_age(head_classes[rows], dlib_age[rows], w), y_a[rows], index)

    everyone = np.ones(len(y_a), bool)
    fusion_age = fit_exponents(lambda w: a_loss(w, everyone))
    fused_age = np.zeros_like(dlib_age)
    for i in range(k):
        here = age.fold == i
        w = fit_exponents(functools.partial(a_loss, rows=~here))
        fused_age[here] = fuse_age(head_classes[here], dlib_age[here], w)
    figures["age"] = {
        "dlib-mixed": age_figures(dlib_age, y_a, class_ages, index),
        "heads": age_figures(head_classes, y_a, class_ages, index),
        FUSED_SET: age_figures(fused_age, y_a, class_ages, index),
    }
    trained = Trained(gender, age, fusion_gender, fusion_age, figures, features, class_ages)
    trained.fit_s = time.perf_counter() - started
    return trained


# ---------------------------------------------------------------------------- export


def manifest_fragment(
    trained: Trained, data: bytes, name: str, folders: Sequence[Path]
) -> dict[str, Any]:
    """The fitted parts of the heads' manifest entry, and how they were made."""
    import hashlib

    features = trained.features
    return {
        "file": {
            "name": f"{name}.onnx",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "format": "onnx",
            "ir_version": IR_VERSION,
            "opset": OPSET,
        },
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", int(features.embeddings.shape[1])],
            "dtype": "float32",
            "embedding": f"faceapi_face_recognition{'_int8' if HEADS_EMBEDDING == 'int8' else ''}",
        },
        "outputs": [
            {"name": OUTPUT_NAMES[0], "shape": ["N", 2], "dtype": "float32"},
            {"name": OUTPUT_NAMES[1], "shape": ["N", len(AGE_GROUPS)], "dtype": "float32"},
        ],
        "postprocessing": {
            "gender_labels": list(GENDER_LABELS),
            "age_groups": [list(g) for g in group_bounds()],
            "fusion": {
                "fused_with": FUSED_SET,
                "gender": list(trained.fusion_gender),
                "age": list(trained.fusion_age),
            },
        },
        "training": {
            "command": "edge-agent train-heads " + " ".join(str(f) for f in folders),
            "folders": [f.name for f in folders],
            "faces": len(features.files),
            "no_face_detected": features.missed,
            "gender_c": trained.gender.c,
            "age_c": trained.age.c,
            "folds": int(trained.gender.fold.max()) + 1,
            "cross_validated": trained.figures,
        },
    }


def report(trained: Trained) -> str:
    """The cross-validated figures as a table."""
    lines = [
        f"{len(trained.features.files)} faces ({trained.features.missed} without a detected face)",
        f"C chosen by {int(trained.gender.fold.max()) + 1}-fold CV log loss: gender "
        f"{trained.gender.c:g} (outer folds {', '.join(f'{c:g}' for c in trained.gender.fold_cs)})"
        f", age {trained.age.c:g} (outer folds {', '.join(f'{c:g}' for c in trained.age.fold_cs)})",
        f"fusion exponents (head, dlib) fitted on out-of-fold outputs: gender "
        f"{trained.fusion_gender}, age {trained.fusion_age}",
        "",
        "nested cross-validated (fused: exponents cross-fitted)",
        f"{'source':<12}{'gender':>9}{'balanced':>10}{'NLL':>7}"
        f"{'age group':>11}{'+-1 group':>11}{'likeliest':>11}{'NLL':>7}",
    ]
    for source in trained.figures["gender"]:
        g, a = trained.figures["gender"][source], trained.figures["age"][source]
        lines.append(
            f"{source:<12}{100 * g['accuracy']:>8.2f}%{100 * g['balanced_accuracy']:>9.2f}%"
            f"{g['nll']:>7.3f}{100 * a['group_accuracy']:>10.2f}%{100 * a['off_by_one']:>10.2f}%"
            f"{100 * a['likeliest_group_accuracy']:>10.2f}%{a['nll']:>7.3f}"
        )
    return "\n".join(lines)


def run(folders: Sequence[Path], out: Path, name: str, k: int = FOLDS) -> Trained:
    """The command: extract, train, write ``out/name.onnx`` and ``out/name.json``, print."""
    from tqdm import tqdm

    started = time.perf_counter()
    total = sum(len(evaluate.read_labels(f)) for f in folders)
    with tqdm(total=total, desc="features", unit="img") as bar:
        features, class_ages = extract(folders, bar.update)
    extract_s = time.perf_counter() - started
    trained = train(features, class_ages, k)
    trained.extract_s = extract_s
    doc = (
        f"Gender and age-group heads on the {HEADS_EMBEDDING} face embedding, trained by "
        f"edge-agent train-heads on {', '.join(f.name for f in folders)}"
    )
    data = heads_onnx(trained.gender.model, trained.age.model, doc)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.onnx").write_bytes(data)
    fragment = manifest_fragment(trained, data, name, folders)
    (out / f"{name}.json").write_text(json.dumps(fragment, indent=2) + "\n", encoding="utf-8")
    print(report(trained))
    total_s = time.perf_counter() - started
    print(
        f"\nwrote {out / f'{name}.onnx'} (sha256 {fragment['file']['sha256']}) and "
        f"{out / f'{name}.json'}; took {total_s:.1f} s ({extract_s:.1f} s features, "
        f"{trained.fit_s:.1f} s fitting)"
    )
    return trained


assert FUSED_SET in HEADS, "the fused set train-heads fits is a model set with heads"
assert MODEL_SETS[FUSED_SET] == MODEL_SETS[BASE_SET], "its members are the base set's"
