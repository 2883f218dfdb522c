"""Does combining a person's crops help? Per-crop against per-person accuracy.

**Clips.** The Intel sample clips with people whose gender the data README (and a look at
the frames) gives, left to right: ``head-pose-face-detection-female`` (a woman),
``-male`` (a man), ``-female-and-male``, ``face-demographics-walking`` (a woman, then a
man) and ``-walking-and-pause`` (woman, man, woman). The agent's detector and tracker
run on every frame; a track is labelled with the person whose left-to-right position it
has. Every crop a track offers (up to 50, not just the 5 the agent keeps) is estimated
on its own with the model set's default variants, then:

- *per crop*: each crop's own answer;
- *track, 5 best*: what the agent publishes: the 5 best crops by quality, their
  calibrated probabilities averaged with quality weights (``aggregate.combine``);
- *k random*: k crops drawn at random from the track (1,000 draws per track and k),
  combined the same way, quality-weighted and unweighted.

Tracks count equally whatever their length (per-crop accuracy is averaged per track
first), so one long clip does not outweigh the rest. There are only 9 people: the per-crop
and k-crop figures are the informative ones. Also printed: the spread of per-crop ages in a
track against the width of the published 80% age range (the clips have no age truth).

**Image sets.** One photo per person, so aggregation there is over test-time variants:
each single variant chip alone (mean accuracy over the 14) against the average of all 14,
from the cached variant tables (``bench/variants.py``).

Usage: ``python bench/aggregation.py [--models SET ...] [--cache DIR]``
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_agent.camera.sources import read_frames
from edge_agent.config import AgentConfig, EstimatorConfig
from edge_agent.pipeline import load_models
from edge_agent.tools import evaluate
from edge_agent.tracking.aggregate import age_estimate, combine
from edge_agent.tracking.tracker import IouTracker, Track
from edge_agent.vision.align import variant_set
from edge_agent.vision.calibration import CALIBRATION, RawOutputs, finish
from edge_agent.vision.detections import FaceEstimate
from edge_agent.vision.model_sets import DEFAULT_VARIANTS, MODEL_SETS

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "audience-edge" / "bench"
# Clip -> the people in it, left to right (README; checked on the frames).
CLIPS = {
    "intel_head-pose-face-detection-female.mp4": ("female",),
    "intel_head-pose-face-detection-male.mp4": ("male",),
    "intel_head-pose-face-detection-female-and-male.mp4": ("female", "male"),
    "intel_face-demographics-walking.mp4": ("female", "male"),
    "intel_face-demographics-walking-and-pause.mp4": ("female", "male", "female"),
}
KEEP_ALL = 50  # TrackerConfig.best_crops' maximum: every crop of these short clips
AGENT_CROPS = 5  # TrackerConfig.best_crops' default
DRAWS = 1000
KS = (1, 2, 3, 5)


@dataclass(frozen=True, slots=True)
class TrackCrops:
    """One person's track: its label and every crop's estimate and quality."""

    clip: str
    truth: str
    estimates: list[FaceEstimate]
    quality: NDArray[np.float64]


def tracks_of(clip: str, people: tuple[str, ...], config: AgentConfig) -> list[Track]:
    """The confirmed tracks the agent's detector and tracker find in a clip."""
    models = load_models(config)
    tracker = IouTracker(
        config.tracker.model_copy(update={"best_crops": KEEP_ALL}), config.detector.min_face_px
    )
    ended: list[Track] = []
    for frame in read_frames("bench", str(DATA / "video" / clip)):
        ended += tracker.update(models.detector.detect(frame.rgb), frame.t, frame.rgb)
    return [t for t in ended + tracker.finish() if t.crops]


def label(track: Track, people: tuple[str, ...], xs: list[float]) -> str:
    """The person whose left-to-right rank the track's mean position has."""
    assert track.first_centre is not None and track.last_centre is not None
    x = (track.first_centre[0] + track.last_centre[0]) / 2.0
    order = sorted(xs)
    # Tracks split in two keep their person: rank by the nearest of k evenly spread slots.
    bounds = np.quantile(order, np.linspace(0, 1, len(people) + 1)[1:-1]) if len(people) > 1 else []
    return people[int(np.searchsorted(bounds, x))] if len(people) > 1 else people[0]


def gender_of(estimates: list[FaceEstimate], weights: NDArray[np.float64]) -> tuple[str, float]:
    gender, _ = combine(estimates, weights.tolist())
    return ("male" if gender[1] > gender[0] else "female"), float(gender.max())


def clip_tracks(model_set: str) -> list[TrackCrops]:
    config = AgentConfig.model_validate({"estimator": {"models": model_set}})
    models = load_models(config)
    out: list[TrackCrops] = []
    for clip, people in CLIPS.items():
        tracks = tracks_of(clip, people, config)
        xs = [
            (t.first_centre[0] + t.last_centre[0]) / 2.0
            for t in tracks
            if t.first_centre and t.last_centre
        ]
        for track in tracks:
            estimates = models.estimator.estimate(track.crops)
            faces = [
                (e, c.quality)
                for e, c in zip(estimates, track.crops, strict=True)
                if e.face_score >= config.estimator.min_face_score
            ]
            if not faces:
                continue
            out.append(
                TrackCrops(
                    clip,
                    label(track, people, xs),
                    [e for e, _ in faces],
                    np.array([q for _, q in faces], np.float64),
                )
            )
    return out


def video_report(model_set: str, rng: np.random.Generator) -> None:
    tracks = clip_tracks(model_set)
    print(f"\n{model_set}: {len(tracks)} tracks, {sum(len(t.estimates) for t in tracks)} crops")
    print(
        f"{'clip':<46}{'truth':>7}{'crops':>6}{'per crop':>10}{'5 best':>8}{'conf':>6}"
        f"{'age sd':>8}{'range':>12}"
    )
    per_crop, best5 = [], []
    for t in tracks:
        answers = [("male" if e.gender[1] > e.gender[0] else "female") for e in t.estimates]
        crop_acc = float(np.mean([a == t.truth for a in answers]))
        top = np.argsort(-t.quality)[:AGENT_CROPS]
        published, confidence = gender_of([t.estimates[i] for i in top], t.quality[top])
        _, age_p = combine([t.estimates[i] for i in top], t.quality[top].tolist())
        files_ages = load_class_ages()
        age = age_estimate(age_p, files_ages)
        crop_ages = [float(e.age @ np.asarray(files_ages)) for e in t.estimates]
        per_crop.append(crop_acc)
        best5.append(published == t.truth)
        print(
            f"{t.clip.removeprefix('intel_'):<46}{t.truth:>7}{len(t.estimates):>6}"
            f"{100 * crop_acc:>9.1f}%{'ok' if published == t.truth else 'WRONG':>8}"
            f"{confidence:>6.2f}{np.std(crop_ages):>8.1f}"
            f"{f'{age.value:.0f} [{age.low:.0f}-{age.high:.0f}]':>12}"
        )
    print(
        f"per-crop accuracy (mean over tracks) {100 * np.mean(per_crop):.1f}%; "
        f"published (5 best, quality-weighted) {100 * np.mean(best5):.1f}% "
        f"({sum(best5)} of {len(best5)} tracks)"
    )
    print(f"{'k random crops':<22}{'weighted':>10}{'conf':>7}{'unweighted':>12}")
    for k in KS:
        hits_w, hits_u, conf_w = [], [], []
        for t in tracks:
            n = len(t.estimates)
            if n < k:
                continue
            hw, hu, cw = 0, 0, 0.0
            for _ in range(DRAWS):
                pick = rng.choice(n, size=k, replace=False)
                g, c = gender_of([t.estimates[i] for i in pick], t.quality[pick])
                hw += g == t.truth
                cw += c
                g, _ = gender_of([t.estimates[i] for i in pick], np.ones(k))
                hu += g == t.truth
            hits_w.append(hw / DRAWS)
            hits_u.append(hu / DRAWS)
            conf_w.append(cw / DRAWS)
        print(
            f"{k:<22}{100 * np.mean(hits_w):>9.1f}%{np.mean(conf_w):>7.2f}"
            f"{100 * np.mean(hits_u):>11.1f}%"
        )


_CLASS_AGES: tuple[float, ...] = ()


def load_class_ages() -> tuple[float, ...]:
    global _CLASS_AGES
    if not _CLASS_AGES:
        from edge_agent.vision.model_files import locate_models

        _CLASS_AGES = locate_models().age_weights
    return _CLASS_AGES


def scored(
    table: evaluate.VariantTable,
    model_set: str,
    truth: NDArray[np.bool_],
    ages: NDArray[np.float64],
    index: list[int],
) -> tuple[float, float | None]:
    """Gender accuracy and age MAE (None without ages) of a set on some variant chips."""
    members = MODEL_SETS[model_set]
    class_ages = load_class_ages()
    raws = [
        RawOutputs(
            table.outputs[f"{m}-{p}"].gender[:, index], table.outputs[f"{m}-{p}"].age[:, index]
        )
        for m, p in members
    ]
    gender, age = finish([m for m, _ in members], raws, CALIBRATION[model_set], class_ages)
    acc = float(((gender[:, 1] > gender[:, 0]) == truth).mean())
    if np.isnan(ages).all():
        return acc, None
    expected = age.astype(np.float64) @ np.asarray(class_ages)
    return acc, float(np.nanmean(np.abs(expected - ages)))


def image_report(model_set: str, cache: Path) -> None:
    """Single variant chips against their average, from the cached tables."""
    members = MODEL_SETS[model_set]
    for folder in (DATA / "faces" / "utkface_dev", DATA / "faces" / "lfw_gender_dev"):
        path = cache / f"{folder.name}.npz"
        if not path.is_file():
            print(f"{folder.name}: no cached table; run bench/variants.py first")
            continue
        table = evaluate.load_table(path)
        rows = {r.file: r for r in evaluate.read_labels(folder)}
        truth = np.array([rows[f].gender == "male" for f in table.files])
        ages = np.array([np.nan if rows[f].age is None else rows[f].age for f in table.files])

        full = variant_set("full")
        singles = [scored(table, model_set, truth, ages, [i]) for i in range(len(full))]
        default = [full.index(v) for v in variant_set(DEFAULT_VARIANTS[members[0][0]])]
        acc_1 = np.mean([s[0] for s in singles])
        acc_d, mae_d = scored(table, model_set, truth, ages, default)
        acc_all, mae_all = scored(table, model_set, truth, ages, list(range(len(full))))
        line = (
            f"{folder.name:<16}{model_set:<15}{100 * acc_1:>9.2f}%{100 * acc_d:>9.2f}%"
            f"{100 * acc_all:>9.2f}%"
        )
        if mae_all is not None and mae_d is not None:
            mae_1 = np.mean([s[1] for s in singles if s[1] is not None])
            line += f"{mae_1:>9.2f}{mae_d:>9.2f}{mae_all:>9.2f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", action="append", help="model sets (default: the default)")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sets = [EstimatorConfig(models=m).models for m in args.models or [EstimatorConfig().models]]
    print("image sets: gender accuracy and age MAE of one variant chip alone (mean over the")
    print("14), of the set's default variants, and of all 14 averaged")
    print(
        f"{'folder':<16}{'set':<15}{'1 chip':>10}{'default':>10}{'all 14':>10}"
        f"{'MAE 1':>9}{'default':>9}{'all 14':>9}"
    )
    for model_set in sets:
        image_report(model_set, args.cache)
    for model_set in sets:
        video_report(model_set, rng)


if __name__ == "__main__":
    main()
