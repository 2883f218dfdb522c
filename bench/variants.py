"""Test-time variants and model sets: accuracy against cost per face, on both image sets.

Every member network (dlib int8 and fp32, face-api fp32 and int8 where built) runs once
on all 14 variant chips of every image's central face (``evaluate.variant_table``, cached
under ``--cache``); each model set under each named variant set (``align.VARIANT_SETS``)
is then scored from those outputs, with the shipped calibration, so every row compares
identical faces. The cost column is measured in this run: the set's networks on one face
at a time (how the agent estimates a track's crops, one track per batch), median ms per
face over ``--faces`` faces; ``x5`` is the same with five faces per batch (a track's
five best crops), per face.

Usage: ``python bench/variants.py [--folders DIR ...] [--cache DIR] [--faces 60]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import AgentConfig
from edge_agent.pipeline import Models, load_models
from edge_agent.timing import StageTimes
from edge_agent.tools import evaluate
from edge_agent.tracking.aggregate import age_estimate
from edge_agent.vision.align import variant_set
from edge_agent.vision.calibration import CALIBRATION, finish, select_variants
from edge_agent.vision.detections import FaceCrop
from edge_agent.vision.estimator import DemographicsEstimator, load_member
from edge_agent.vision.model_files import ModelFiles
from edge_agent.vision.model_sets import DEFAULT_VARIANTS, MODEL_SETS, Member
from edge_agent.vision.model_sets import MemberPrecision as Precision

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
FOLDERS = (SHARED / "utkface_dev", SHARED / "lfw_gender_dev")
CACHE = Path.home() / ".cache" / "audience-edge" / "bench"
PRESETS = ("default", "none", "zoom", "flip", "pair", "scale3", "jitter7", "full")
NETWORKS = ("gender", "age", "age_gender")


def available_members(files: ModelFiles) -> list[tuple[Member, Precision]]:
    """Every (member, precision) whose files this model directory holds."""
    found: list[tuple[Member, Precision]] = []
    for member, precision in dict.fromkeys(m for ms in MODEL_SETS.values() for m in ms):
        try:
            load_member(member, precision, files, 1)
        except FileNotFoundError:
            continue
        found.append((member, precision))
    return found


def set_outputs(
    table: evaluate.VariantTable, model_set: str, variants: str, class_ages: tuple[float, ...]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A set's calibrated gender ``[N, 2]`` and age ``[N, 81]`` under a variant set."""
    members = MODEL_SETS[model_set]
    raws = [
        select_variants(
            table.outputs[f"{m}-{p}"], DEFAULT_VARIANTS[m] if variants == "default" else variants
        )
        for m, p in members
    ]
    return finish([m for m, _ in members], raws, CALIBRATION[model_set], class_ages)


def scores(
    rows: list[evaluate.Labelled],
    gender: NDArray[np.float32],
    age: NDArray[np.float32],
    class_ages: tuple[float, ...],
) -> tuple[float, float, float | None]:
    """Gender accuracy (all, 13+) and age MAE (None without ages)."""
    male = gender[:, 1] > gender[:, 0]
    truth = np.array([r.gender == "male" for r in rows])
    ages = np.array([np.nan if r.age is None else r.age for r in rows])
    adult = ~(ages < evaluate.ADULT_AGE)
    expected = np.array([age_estimate(a.astype(np.float64), class_ages).value for a in age])
    mae = None if np.isnan(ages).all() else float(np.nanmean(np.abs(expected - ages)))
    return float((male == truth).mean()), float((male == truth)[adult].mean()), mae


def cost_ms(models: Models, model_set: str, variants: str, crops: list[FaceCrop]) -> list[float]:
    """Median network ms per face: one face per batch, then five faces per batch."""
    config = AgentConfig.model_validate({"estimator": {"models": model_set, "variants": variants}})
    estimator = DemographicsEstimator.load(
        config.estimator, models.files, models.estimator.landmarker
    )
    out = []
    for per_batch in (1, 5):
        per_face = []
        estimator.estimate(crops[:per_batch])  # warm up
        for start in range(0, len(crops) - per_batch + 1, per_batch):
            estimator.times = StageTimes()
            estimator.estimate(crops[start : start + per_batch])
            samples = estimator.times.samples
            per_face.append(sum(sum(samples[n]) for n in NETWORKS) / per_batch)
        out.append(float(np.median(per_face)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="*", type=Path, default=list(FOLDERS))
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--faces", type=int, default=60, help="faces timed per row")
    parser.add_argument("--sets", nargs="*", default=None, help="model sets (default: built)")
    parser.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = parser.parse_args()

    models = load_models(
        AgentConfig.model_validate({"detector": {"model": "short_range", "score_threshold": 0.5}})
    )
    files = models.files
    members = available_members(files)
    built = {f"{m}-{p}" for m, p in members}
    sets = args.sets or [
        name for name, ms in MODEL_SETS.items() if all(f"{m}-{p}" in built for m, p in ms)
    ]
    tables = {f: evaluate.cached_table(f, members, args.cache) for f in args.folders}

    # Cost: faces spread over the first folder, the same faces for every row.
    first = args.folders[0]
    rows = evaluate.read_labels(first)
    pick = np.linspace(0, len(rows) - 1, args.faces).round().astype(int)
    crops, _ = evaluate.face_crops(models, first, [rows[i] for i in pick])
    costs = {(s, v): cost_ms(models, s, v, crops) for s in sets for v in args.presets}

    for folder, table in tables.items():
        labelled = evaluate.read_labels(folder)
        by_file = {r.file: r for r in labelled}
        ordered = [by_file[f] for f in table.files]
        has_age = any(r.age is not None for r in ordered)
        print(f"\n{len(ordered)} images from {folder} (no face found in {table.missed})")
        header = f"{'set':<15}{'variants':<9}{'chips':>6}{'gender':>9}{'13+':>8}"
        header += f"{'MAE':>7}" if has_age else ""
        header += f"{'ms/face':>9}{'x5':>7}"
        print(header)
        print("-" * len(header))
        for model_set in sets:
            for variants in args.presets:
                gender, age = set_outputs(table, model_set, variants, files.age_weights)
                all_, adult, mae = scores(ordered, gender, age, files.age_weights)
                chips = "+".join(
                    str(
                        len(variant_set(DEFAULT_VARIANTS[m] if variants == "default" else variants))
                    )
                    for m, _ in MODEL_SETS[model_set]
                )
                line = f"{model_set:<15}{variants:<9}{chips:>6}{100 * all_:>8.2f}%"
                line += f"{100 * adult:>7.2f}%"
                line += f"{mae:>7.2f}" if has_age and mae is not None else ""
                one, five = costs[(model_set, variants)]
                print(line + f"{one:>9.2f}{five:>7.2f}")


if __name__ == "__main__":
    main()
