"""Are the confidences honest? Gender ECE and age-range coverage, before and after fitting.

Per model set, each member on its default test-time variants, from the cached variant
tables (``bench/variants.py`` makes them; ``estimator.Calibration`` says what is fitted):

- **gender**: a temperature on the log-odds, fitted (negative log-likelihood) on
  ``lfw_gender_dev`` and scored on ``utkface_dev``, which it never saw; the LFW columns
  are two-fold cross-fitted (fit on one half, score the other);
- **age**: the point age becomes a Gaussian of spread ``a + b * age + c * s`` years
  (``s``: the networks' own spread), fitted by likelihood; only ``utkface_dev`` has ages,
  so the fit is two-fold cross-fitted there (halves by file-name hash) and every figure
  printed is on the half the fit did not see. The constants to ship are then fitted on
  all of utkface_dev (they are not held out; the printed figures are).

ECE: expected calibration error of the gender confidence, 10 bins over 0.5..1.
Coverage: how often the true age lies in the reported 80% range (should be ~80%); ages
above 80 count as 80, the oldest age class (dlib's classes, and so every event's range,
end there), so MAE here is also on clipped ages.

Usage: ``python bench/calibration.py [--cache DIR]``; prints the tables and the
``CALIBRATION`` entries for edge_agent/vision/calibration.py.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import AgentConfig, EstimatorConfig
from edge_agent.tools import evaluate
from edge_agent.tracking.aggregate import AGE_INTERVAL, age_estimate
from edge_agent.vision.calibration import (
    CALIBRATION,
    Calibration,
    Points,
    age_distribution,
    gender_calibrated,
    points,
    select_variants,
)
from edge_agent.vision.estimator import load_member
from edge_agent.vision.model_files import locate_models
from edge_agent.vision.model_sets import DEFAULT_VARIANTS, MODEL_SETS, Member
from edge_agent.vision.model_sets import MemberPrecision as Precision

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
UTK, LFW = SHARED / "utkface_dev", SHARED / "lfw_gender_dev"
CACHE = Path.home() / ".cache" / "audience-edge" / "bench"
TEMPERATURES = np.exp(np.linspace(np.log(0.3), np.log(5.0), 241))
SIGMA_A = np.linspace(0.0, 8.0, 33)
SIGMA_B = np.linspace(0.0, 0.4, 41)
SIGMA_C = np.linspace(0.0, 2.0, 21)
Z80 = 1.2816  # a standard Gaussian's central 80% lies within +-Z80


def labels(folder: Path, table: evaluate.VariantTable) -> tuple[NDArray[np.bool_], NDArray[Any]]:
    """Male truth and ages (NaN unknown) in the table's order."""
    rows = {r.file: r for r in evaluate.read_labels(folder)}
    ordered = [rows[f] for f in table.files]
    male = np.array([r.gender == "male" for r in ordered])
    ages = np.array([np.nan if r.age is None else r.age for r in ordered], np.float64)
    return male, ages


def halves(files: list[str]) -> NDArray[np.int_]:
    """A fixed two-fold split by file name."""
    return np.array([zlib.crc32(f.encode()) % 2 for f in files])


def gender_nll(male_p: NDArray[np.floating], male: NDArray[np.bool_], t: float) -> float:
    p = gender_calibrated(male_p, t)[:, 1].astype(np.float64)
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(np.where(male, np.log(p), np.log(1 - p))))


def fit_temperature(male_p: NDArray[np.floating], male: NDArray[np.bool_]) -> float:
    return float(min(TEMPERATURES, key=lambda t: gender_nll(male_p, male, t)))


def ece(male_p: NDArray[np.floating], male: NDArray[np.bool_], t: float) -> float:
    p = gender_calibrated(male_p, t)[:, 1]
    confidence = np.maximum(p, 1 - p)
    return evaluate.expected_calibration_error(confidence.tolist(), ((p > 0.5) == male).tolist())


def gaussian_nll(
    found: Points, ages: NDArray[np.floating], sigma: tuple[float, float, float]
) -> float:
    """Mean negative log-likelihood of the true ages under N(age, sigma) (continuous)."""
    a, b, c = sigma
    width = np.maximum(a + b * found.age + c * found.spread, 0.5)
    return float(np.mean(0.5 * ((ages - found.age) / width) ** 2 + np.log(width)))


def fit_sigma(found: Points, ages: NDArray[np.floating]) -> tuple[float, float, float]:
    """The spread (a, b, c): its shape by likelihood (grid search), then scaled so that
    80% of these errors fall within the Gaussian's central 80% (+-1.2816 sigma). The
    errors are heavier-tailed than a Gaussian (label noise, a few wild misses), so the
    likelihood fit alone gives ranges that hold the true age less often than they say."""
    cs = SIGMA_C if found.spread.max() > 0 else np.zeros(1)
    grid = [(a, b, c) for a in SIGMA_A for b in SIGMA_B for c in cs]
    a, b, c = min(grid, key=lambda s: gaussian_nll(found, ages, s))
    width = np.maximum(a + b * found.age + c * found.spread, 0.5)
    k = float(np.quantile(np.abs(ages - found.age) / width, AGE_INTERVAL)) / Z80
    return round(float(k * a), 2), round(float(k * b), 3), round(float(k * c), 2)


def subset(found: Points, keep: NDArray[np.bool_]) -> Points:
    return Points(found.male[keep], found.age[keep], found.spread[keep])


def age_report(
    found: Points, sigma: tuple[float, float, float], ages: NDArray[np.floating], class_ages: Any
) -> tuple[float, float, float]:
    """(MAE, coverage of the published 80% range, its mean width) with this spread."""
    dist = age_distribution(found.age, found.spread, sigma, class_ages)
    results = [age_estimate(d.astype(np.float64), class_ages) for d in dist]
    mae = float(np.mean([abs(r.value - a) for r, a in zip(results, ages, strict=True)]))
    inside = np.mean([r.low <= a <= r.high for r, a in zip(results, ages, strict=True)])
    width = float(np.mean([r.high - r.low for r in results]))
    return mae, float(inside), width


def set_points(
    table: evaluate.VariantTable, model_set: str, class_ages: Any, variants: str | None = None
) -> Points:
    """A set's point estimates on a table, each member on its default variants."""
    members = MODEL_SETS[model_set]
    raws = [
        select_variants(table.outputs[f"{m}-{p}"], variants or DEFAULT_VARIANTS[m])
        for m, p in members
    ]
    return points([m for m, _ in members], raws, class_ages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    files = locate_models(AgentConfig().models_dir)
    class_ages = files.age_weights
    members: list[tuple[Member, Precision]] = []
    for m in dict.fromkeys(x for ms in MODEL_SETS.values() for x in ms):
        try:
            load_member(m[0], m[1], files, 1)
        except FileNotFoundError:
            continue
        members.append(m)
    sets = [name for name, ms in MODEL_SETS.items() if all(m in members for m in ms)]
    utk = evaluate.cached_table(UTK, members, args.cache)
    lfw = evaluate.cached_table(LFW, members, args.cache)
    utk_male, true_ages = labels(UTK, utk)
    # dlib's classes end at 80 (its oldest class holds everyone older): ages are clipped
    # to the classes' range for the spread and for whether the range holds the true age.
    utk_ages = np.clip(true_ages, class_ages[0], class_ages[-1])
    lfw_male, _ = labels(LFW, lfw)
    utk_fold, lfw_fold = halves(utk.files), halves(lfw.files)

    def pair(before: float, after: float, pct: bool = True) -> str:
        scale, unit = (100.0, "%") if pct else (1.0, "")
        return f"{scale * before:.2f}{unit} -> {scale * after:.2f}{unit}"

    fitted: dict[str, Calibration] = {}
    print("gender: temperature T fitted on lfw_gender_dev and scored on utkface_dev (held out);")
    print("lfw_gender_dev two-fold cross-fitted. ECE (10 bins) and log loss, before -> after")
    header = f"{'set':<15}{'T':>6}{'UTK ECE':>18}{'UTK 13+ ECE':>18}{'UTK log loss':>18}"
    header += f"{'LFW ECE':>18}"
    print(header + f"{'LFW log loss':>18}")
    for model_set in sets:
        u = set_points(utk, model_set, class_ages).male
        v = set_points(lfw, model_set, class_ages).male
        t = fit_temperature(v, lfw_male)
        adult = utk_ages >= evaluate.ADULT_AGE
        adult_ece = pair(ece(u[adult], utk_male[adult], 1.0), ece(u[adult], utk_male[adult], t))
        crossed = [
            (fit_temperature(v[lfw_fold != k], lfw_male[lfw_fold != k]), lfw_fold == k)
            for k in (0, 1)
        ]
        lfw_ece = sum(ece(v[sel], lfw_male[sel], tk) * sel.mean() for tk, sel in crossed)
        lfw_nll = sum(gender_nll(v[sel], lfw_male[sel], tk) * sel.mean() for tk, sel in crossed)

        print(
            f"{model_set:<15}{t:>6.2f}{pair(ece(u, utk_male, 1.0), ece(u, utk_male, t)):>18}"
            f"{adult_ece:>18}"
            f"{pair(gender_nll(u, utk_male, 1.0), gender_nll(u, utk_male, t), False):>18}"
            f"{pair(ece(v, lfw_male, 1.0), lfw_ece):>18}"
            f"{pair(gender_nll(v, lfw_male, 1.0), lfw_nll, False):>18}"
        )
        fitted[model_set] = Calibration(gender_temperature=round(t, 3))

    print("\nage on utkface_dev: spread a + b*age + c*s fitted two-fold (each half scored with")
    print("the other half's fit); before: dlib's own 81-class distribution (face-api: no range)")
    print(f"{'set':<15}{'fit on all (a, b, c)':<24}{'MAE':>7}{'in 80% range':>22}{'width':>18}")
    for model_set in sets:
        found = set_points(utk, model_set, class_ages)
        held = []
        for k in (0, 1):
            sigma = fit_sigma(subset(found, utk_fold != k), utk_ages[utk_fold != k])
            keep = utk_fold == k
            held.append((age_report(subset(found, keep), sigma, utk_ages[keep], class_ages), keep))
        after = [sum(r[i] * keep.mean() for r, keep in held) for i in range(3)]
        mae = float(np.mean(np.abs(np.round(found.age, 1) - true_ages)))
        before = "n/a"
        width = "n/a"
        if all(m == "dlib" for m, _ in MODEL_SETS[model_set]):
            own = select_variants(utk.outputs[model_set], DEFAULT_VARIANTS["dlib"]).age.mean(1)
            ranges = [age_estimate(d.astype(np.float64), class_ages) for d in own]
            inside = np.mean([r.low <= a <= r.high for r, a in zip(ranges, utk_ages, strict=True)])
            before = f"{100 * inside:.1f}%"
            width = f"{np.mean([r.high - r.low for r in ranges]):.1f}"
        full = fit_sigma(found, utk_ages)
        print(
            f"{model_set:<15}{full!s:<24}{mae:>7.2f}"
            f"{f'{before} -> {100 * after[1]:.1f}%':>22}{f'{width} -> {after[2]:.1f}':>18}"
        )
        fitted[model_set] = Calibration(fitted[model_set].gender_temperature, full)

    print("\nshipped (edge_agent/vision/calibration.py) on each set's default variants:")
    for model_set in sets:
        cal = CALIBRATION[model_set]
        u, v = set_points(utk, model_set, class_ages), set_points(lfw, model_set, class_ages)
        _, cov, width = age_report(u, cal.age_sigma, utk_ages, class_ages)
        mae = float(np.mean(np.abs(np.round(u.age, 1) - true_ages)))
        print(
            f"  {model_set:<15}UTK ECE {100 * ece(u.male, utk_male, cal.gender_temperature):5.2f}%"
            f"  LFW ECE {100 * ece(v.male, lfw_male, cal.gender_temperature):5.2f}%"
            f"  MAE {mae:5.2f}  in 80% range {100 * cov:5.1f}%  width {width:4.1f}"
        )

    default = EstimatorConfig().models
    cal = CALIBRATION[default]
    print(f"\nreliability of {default}'s shipped gender confidence (per confidence bin: faces, ")
    print("mean confidence, accuracy); utkface_dev is held out for the gender temperature")
    for name, table, male in (("utkface_dev", utk, utk_male), ("lfw_gender_dev", lfw, lfw_male)):
        p_male = gender_calibrated(
            set_points(table, default, class_ages).male, cal.gender_temperature
        )
        conf = p_male.max(axis=1)
        right = (p_male[:, 1] > 0.5) == male
        cells = []
        for low, high in ((0.5, 0.7), (0.7, 0.9), (0.9, 0.97), (0.97, 0.99), (0.99, 1.01)):
            inside = (conf >= low) & (conf < high)
            if inside.any():
                cells.append(
                    f"[{low:.2f},{min(high, 1.0):.2f}) {int(inside.sum())}: "
                    f"{conf[inside].mean():.2f}/{right[inside].mean():.2f}"
                )
        print(f"  {name:<16}" + "  ".join(cells))

    print("\nCALIBRATION = {")
    for name, cal in fitted.items():
        print(f"    {name!r}: Calibration({cal.gender_temperature}, {cal.age_sigma}),")
    print("}")


if __name__ == "__main__":
    main()
