"""Do corrected population shares beat naive ones on populations the correction never saw?

Per image, the default model set's calibrated P(female) and age distribution (run as
``edge-agent eval`` runs it; cached under /tmp), on utkface_dev, lfw_gender_dev (gender
only) and fairface_dev. Age bands are fairface_dev's groups (0-2, 3-9, 10-19, ..., 60-69,
70+); utkface's exact ages are mapped into them. The hub's bands (0-12, 13-17, 18-24,
25-34, ...) cut across those groups, so nothing fitted on fairface_dev can correct them.

For every ordered pair (fit set, score set) with the labels: the correction
(``edge_agent.shares.Correction``) is fitted on all of the fit set, then scored on
``--populations`` populations drawn from the score set: 200 to 2,000 people, female share
uniform in 20-80%, an age mix drawn from a flat Dirichlet over the bands, people drawn
with replacement within each gender x age stratum. The truth is the drawn people's labels.

The hub ships EM for gender (the ``em`` rows: its point, ``pacc``'s interval moved onto
it, exactly ``cloud_hub.queries.shares``) and the naive mean band probability for age in
its own bands (0-12, 13-17, ..., 65+), scored on utkface_dev, the one set with exact ages
(``hub bands`` table). ``--write-reference`` writes the gender reference the hub uses,
fitted on fairface_dev only, to ``edge_agent/shares_reference.py``.

Usage: ``python bench/population_shares.py [--populations 200] [--seed 0]
[--write-reference]``
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import AgentConfig
from edge_agent.contract import AGE_BAND_LOWER_BOUNDS, AGE_BAND_NAMES
from edge_agent.pipeline import load_models
from edge_agent.shares import (
    EM_MAX_ITER,
    EM_TOL,
    Correction,
    CorrectionError,
    Method,
    Shares,
    em_priors,
    fit_correction,
    from_observed,
    recentred,
    shares,
)
from edge_agent.tools import evaluate
from edge_agent.vision.calibration import CALIBRATION

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
SETS = ("utkface_dev", "lfw_gender_dev", "fairface_dev")
CACHE = Path("/tmp/population_shares")
BANDS = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
GENDERS = ("female", "male")
METHODS: tuple[Method, ...] = ("cc", "pcc", "acc", "pacc", "em")
NAIVE = ("cc", "pcc")
ORACLE = "oracle"  # acc fitted on the scored set itself: the floor of any correction
DRAWS = 300  # for the drawn-interval column


MODEL_SET = "dlib-mixed"  # the default set (AgentConfig), what the reference describes
REFERENCE_MODULE = Path(__file__).resolve().parents[1] / "edge_agent" / "shares_reference.py"


def hub_band_of(age: float) -> int:
    """The hub's (and the contract's) age band of an age in years."""
    return int(np.searchsorted(np.asarray(AGE_BAND_LOWER_BOUNDS), age, side="right") - 1)


def band_of(age: float) -> int:
    """fairface_dev's age group of an age in years."""
    if age < 3:
        return 0
    if age < 10:
        return 1
    return min(int(age // 10) + 1, len(BANDS) - 1)


@dataclass(frozen=True)
class FaceSet:
    """Per-image labels and outputs of one set (age -1 where unknown)."""

    name: str
    female: NDArray[np.int64]  # 1 female, 0 male
    band: NDArray[np.int64]  # -1: no age label
    p_female: NDArray[np.float64]
    p_band: NDArray[np.float64]  # [N, bands]
    age_band_said: NDArray[np.int64]  # the band of the expected age (what the hub counts)
    hub_band: NDArray[np.int64]  # the hub's band of the exact age; -1: no exact age
    p_hub_band: NDArray[np.float64]  # [N, 8]: what the event's age_bands carry
    hub_band_said: NDArray[np.int64]  # the hub's band of the expected age (its age counts)

    @property
    def has_age(self) -> bool:
        return bool((self.band >= 0).all())


def compute(folder: Path) -> dict[str, list[float]]:
    """Per file: P(female), expected age and the bands' probabilities (default set)."""
    config = AgentConfig.model_validate(
        {"detector": {"model": "short_range", "score_threshold": 0.5}}
    )
    models = load_models(config)
    files = models.files
    female_i = files.gender_labels.index("female")
    ages = np.asarray(files.age_weights, np.float64)
    to_band = np.zeros((len(ages), len(BANDS)))
    to_band[np.arange(len(ages)), [band_of(a) for a in ages]] = 1.0
    to_hub = np.zeros((len(ages), len(AGE_BAND_NAMES)))
    to_hub[np.arange(len(ages)), [hub_band_of(a) for a in ages]] = 1.0
    rows = evaluate.read_labels(folder)
    out: dict[str, list[float]] = {}
    for start in range(0, len(rows), evaluate.BATCH):
        batch = rows[start : start + evaluate.BATCH]
        crops, _ = evaluate.face_crops(models, folder, batch)
        for row, est in zip(batch, models.estimator.estimate(crops), strict=True):
            age = est.age.astype(np.float64)
            out[row.file] = [
                float(est.gender[female_i]),
                float(age @ ages),
                *(age @ to_band).tolist(),
                *(age @ to_hub).tolist(),
            ]
    return out


def load_set(name: str) -> FaceSet:
    folder = SHARED / name
    # Outputs depend on the calibration: a refit must not read old outputs.
    calibration = CALIBRATION[MODEL_SET]
    tag = f"{calibration.gender_temperature}-{'-'.join(map(str, calibration.age_sigma))}"
    cache = CACHE / f"{name}-{MODEL_SET}-{tag}.json"
    if cache.is_file():
        outputs = json.loads(cache.read_text())
    else:
        outputs = compute(folder)
        CACHE.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(outputs))
    with (folder / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    female, band, hub_band, out = [], [], [], []
    for r in rows:
        female.append(1 if r["gender"] == "female" else 0)
        hub_band.append(hub_band_of(float(r["age"])) if r.get("age") else -1)
        if r.get("age_group"):
            band.append(BANDS.index(r["age_group"]))
        elif r.get("age"):
            band.append(band_of(float(r["age"])))
        else:
            band.append(-1)
        out.append(outputs[r["file"]])
    o = np.asarray(out, np.float64)
    k = 2 + len(BANDS)
    return FaceSet(
        name,
        np.asarray(female),
        np.asarray(band),
        o[:, 0],
        o[:, 2:k] / o[:, 2:k].sum(axis=1, keepdims=True),
        np.asarray([band_of(a) for a in o[:, 1]]),
        np.asarray(hub_band),
        o[:, k:] / o[:, k:].sum(axis=1, keepdims=True),
        np.asarray([hub_band_of(a) for a in o[:, 1]]),
    )


def fit(s: FaceSet, attribute: str) -> Correction:
    if attribute == "gender":
        post = np.stack([s.p_female, 1.0 - s.p_female], axis=1)
        labels = (1 - s.female).tolist()
        return fit_correction("gender", GENDERS, labels, post.tolist(), s.name, MODEL_SET)
    return fit_correction(
        "age_band",
        BANDS,
        s.band.tolist(),
        s.p_band.tolist(),
        s.name,
        MODEL_SET,
        predicted=s.age_band_said.tolist(),
    )


def draw(s: FaceSet, rng: np.random.Generator) -> NDArray[np.int64]:
    """One population's image indices, drawn within gender x age strata."""
    n = int(rng.integers(200, 2001))
    f = rng.uniform(0.2, 0.8)
    gender = (rng.random(n) < f).astype(np.int64)
    if s.has_age:
        mix = rng.dirichlet(np.ones(len(BANDS)))
        band = rng.choice(len(BANDS), size=n, p=mix)
    else:
        band = np.full(n, -1)
    picks = np.empty(n, np.int64)
    for g in (0, 1):
        for b in np.unique(band):
            where = np.flatnonzero((gender == g) & (band == b))
            pool = np.flatnonzero((s.female == g) & (s.band == b))
            if len(where) and not len(pool):
                raise SystemExit(f"{s.name}: no faces in stratum {GENDERS[1 - g]} {b}")
            picks[where] = rng.choice(pool, size=len(where))
    return picks


def em_numpy(post: NDArray[np.float64], ref: NDArray[np.float64]) -> NDArray[np.float64]:
    """``shares.em_priors`` in NumPy (the same iteration; ``check_em`` compares them),
    because pure Python takes seconds per population of 2,000 people x 9 bands."""
    prior = post.mean(axis=0)
    for _ in range(EM_MAX_ITER):
        w = post * (prior / ref)
        new = (w / w.sum(axis=1, keepdims=True)).mean(axis=0)
        done = float(np.abs(new - prior).max()) < EM_TOL
        prior = new
        if done:
            break
    return np.asarray(prior)


def check_em(s: FaceSet) -> None:
    """The NumPy EM gives the module's answer on one real population."""
    idx = draw(s, np.random.default_rng(99))[:300]
    ref = np.full(len(BANDS), 1.0 / len(BANDS))
    mine = em_numpy(s.p_band[idx], ref)
    theirs, _ = em_priors(s.p_band[idx].tolist(), ref.tolist())
    assert np.allclose(mine, theirs, atol=1e-6), (mine, theirs)


def estimate(
    method: Method, post: NDArray[np.float64], said: NDArray[np.int64], c: Correction, draws: int
) -> Shares:
    n, k = post.shape
    if method in ("cc", "acc"):
        observed = (np.bincount(said, minlength=k) / n).tolist()
    else:
        observed = post.mean(axis=0).tolist()
    if method == "em":
        point = em_numpy(post, np.asarray(c.reference_prior)).tolist()
        return recentred(point, from_observed(observed, n, c, "pacc", draws=draws))
    return from_observed(observed, n, c, method, draws=draws)


def run_pair(
    fit_set: FaceSet, score_set: FaceSet, attribute: str, pops: int, seed: int
) -> dict[str, dict[str, list[float]]]:
    """Per method: errors, interval hits (delta and drawn), per population. ``oracle``:
    ``acc`` with the confusion measured on the scored set itself (the very images the
    populations are drawn from), the best a label-shift correction can do: what is left
    is the people's own noise, which no correction removes."""
    c = fit(fit_set, attribute)
    oracle = fit(score_set, attribute)
    rng = np.random.default_rng(seed)
    res: dict[str, dict[str, list[float]]] = {
        m: {"err": [], "hit": [], "hit_drawn": [], "all": []} for m in (*METHODS, ORACLE)
    }
    for _ in range(pops):
        idx = draw(score_set, rng)
        if attribute == "gender":
            pf = score_set.p_female[idx]
            post = np.stack([pf, 1.0 - pf], axis=1)
            said = (pf < 0.5).astype(np.int64)
            truth = np.array([score_set.female[idx].mean(), 1.0 - score_set.female[idx].mean()])
        else:
            post = score_set.p_band[idx]
            said = score_set.age_band_said[idx]
            truth = np.bincount(score_set.band[idx], minlength=len(BANDS)) / len(idx)
        for m in (*METHODS, ORACLE):
            try:
                if m == ORACLE:
                    s = estimate("acc", post, said, oracle, 0)
                else:
                    s = estimate(m, post, said, c, 0)  # type: ignore[arg-type]
                d = estimate(m, post, said, c, DRAWS) if m in ("acc", "pacc") else s
            except CorrectionError:
                continue
            est, lo, hi = np.array(s.estimate), np.array(s.low), np.array(s.high)
            inside = (lo - 1e-9 <= truth) & (truth <= hi + 1e-9)
            inside_d = (np.array(d.low) - 1e-9 <= truth) & (truth <= np.array(d.high) + 1e-9)
            r = res[m]
            if attribute == "gender":
                r["err"].append(abs(est[0] - truth[0]))
                r["hit"].append(float(inside[0]))
                r["hit_drawn"].append(float(inside_d[0]))
            else:
                r["err"].append(0.5 * float(np.abs(est - truth).sum()))
                r["hit"].append(float(inside.mean()))
                r["hit_drawn"].append(float(inside_d.mean()))
                r["all"].append(float(inside.all()))
    return res


def run_hub_bands(s: FaceSet, pops: int, seed: int) -> dict[str, dict[str, list[float]]]:
    """The hub's age shares in its own bands (no correction): ``pcc`` is what
    ``/v1/stats?shares=true`` answers, ``cc`` what its age counts say."""
    rng = np.random.default_rng(seed)
    k = len(AGE_BAND_NAMES)
    res: dict[str, dict[str, list[float]]] = {
        m: {"err": [], "hit": [], "hit_drawn": [], "all": []} for m in NAIVE
    }
    for _ in range(pops):
        idx = draw(s, rng)
        truth = np.bincount(s.hub_band[idx], minlength=k) / len(idx)
        for m in NAIVE:
            if m == "cc":
                observed = np.bincount(s.hub_band_said[idx], minlength=k) / len(idx)
            else:
                observed = s.p_hub_band[idx].mean(axis=0)
            est = from_observed(observed.tolist(), len(idx), None, m)
            inside = (np.array(est.low) - 1e-9 <= truth) & (truth <= np.array(est.high) + 1e-9)
            r = res[m]
            r["err"].append(0.5 * float(np.abs(np.array(est.estimate) - truth).sum()))
            r["hit"].append(float(inside.mean()))
            r["hit_drawn"].append(float(inside.mean()))
            r["all"].append(float(inside.all()))
    return res


def write_reference(c: Correction) -> None:
    """``edge_agent/shares_reference.py``: the gender reference the hub ships."""
    soft = tuple(tuple(round(v, 3) for v in row) for row in c.soft)
    classes = "(" + ", ".join(json.dumps(k) for k in c.classes) + ")"
    REFERENCE_MODULE.write_text(
        f'''"""What the shipped models are known to do on gender, measured on fairface_dev.

Written by ``python bench/population_shares.py --write-reference`` from the default
model set's calibrated outputs on ``faces/fairface_dev`` (FairFace, Kärkkäinen and Joo,
CC BY 4.0: the one set here whose licence allows fitting what ships). The hub's
corrected gender shares (``cloud_hub.queries.shares``) take EM's reference prior and
the interval's confusion counts from it. Do not edit by hand: run the bench again.
"""

from __future__ import annotations

from typing import Final

from edge_agent.shares import Correction

GENDER_REFERENCE: Final = Correction(
    attribute="gender",
    classes={classes},
    hard={tuple(tuple(r) for r in c.hard)!r},
    soft={soft!r},
    fitted_on={json.dumps(c.fitted_on)},
    model_set={json.dumps(c.model_set)},
)
'''
    )
    print(f"wrote {REFERENCE_MODULE}")


def report(title: str, res: dict[str, dict[str, list[float]]], unit: str) -> dict[str, float]:
    print(f"\n{title}")
    print(
        f"{'method':<6} {unit + ' mean':>10} {'median':>8} {'p90':>8} {'max':>8}"
        f" {'90% holds':>10} {'drawn':>7} {'all bands':>10}"
    )
    means = {}
    for m, r in res.items():
        e = 100.0 * np.asarray(r["err"])
        means[m] = float(e.mean())
        drawn = f"{100 * np.mean(r['hit_drawn']):6.1f}%" if m in ("acc", "pacc") else "      -"
        every = f"{100 * np.mean(r['all']):9.1f}%" if r["all"] else "        -"
        print(
            f"{m:<6} {e.mean():10.2f} {np.median(e):8.2f} {np.percentile(e, 90):8.2f}"
            f" {e.max():8.2f} {100 * np.mean(r['hit']):9.1f}% {drawn} {every}"
        )
    return means


def timing(c_gender: Correction, c_age: Correction) -> None:
    """A hub request: 10,000 people's posteriors to shares with an interval."""
    rng = np.random.default_rng(1)
    pf = rng.random(10_000)
    gender = np.stack([pf, 1 - pf], axis=1).tolist()
    age = rng.dirichlet(np.ones(len(BANDS)), size=10_000).tolist()
    for label, post, c in (("gender", gender, c_gender), ("age bands", age, c_age)):
        for method, draws in (("acc", 0), ("pacc", 0), ("acc", DRAWS)):
            start = time.perf_counter()
            shares(post, c, method, draws=draws)  # type: ignore[arg-type]
            ms = 1000 * (time.perf_counter() - start)
            what = "delta" if draws == 0 else f"{draws} draws"
            print(f"  {label:<9} {method:<5} ({what:<9}) {ms:7.1f} ms for 10,000 people")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--populations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--write-reference",
        action="store_true",
        help="write the gender reference fitted on fairface_dev to edge_agent/shares_reference.py",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    sets = {name: load_set(name) for name in SETS}
    print(f"per-image outputs: {time.perf_counter() - start:.1f} s (cache {CACHE})")
    check_em(sets["fairface_dev"])
    summary: list[tuple[str, str, dict[str, float]]] = []
    pairs: list[tuple[str, str, str]] = [("gender", a, b) for a in SETS for b in SETS if a != b] + [
        ("age_band", "utkface_dev", "fairface_dev"),
        ("age_band", "fairface_dev", "utkface_dev"),
    ]
    for i, (attribute, a, b) in enumerate(pairs):
        res = run_pair(sets[a], sets[b], attribute, args.populations, args.seed + i)
        unit = "|err| pts" if attribute == "gender" else "TV pts"
        what = "female share" if attribute == "gender" else "age distribution (9 bands)"
        means = report(
            f"{what}: fit on {a}, scored on {args.populations} populations of {b}", res, unit
        )
        summary.append((attribute, f"{a} -> {b}", means))
    hub = run_hub_bands(sets["utkface_dev"], args.populations, args.seed + len(pairs))
    report(
        f"the hub's age shares in its bands ({', '.join(AGE_BAND_NAMES)}), not corrected: "
        f"{args.populations} populations of utkface_dev",
        hub,
        "TV pts",
    )
    print("\nsummary (mean error, points): best naive vs best corrected")
    for attribute, pair, means in summary:
        naive = min(means[m] for m in NAIVE)
        best = min((means[m], m) for m in METHODS if m not in NAIVE)
        ok = "met" if best[0] <= naive / 2 else "NOT met"
        print(
            f"  {attribute:<8} {pair:<32} naive {naive:5.2f}  {best[1]} {best[0]:5.2f}"
            f"  (half of naive: {ok}; oracle {means[ORACLE]:5.2f})"
        )
    print("\nwhat would ship (fitted on fairface_dev only):")
    c_gender, c_age = fit(sets["fairface_dev"], "gender"), fit(sets["fairface_dev"], "age_band")
    print("  " + c_gender.to_json())
    if args.write_reference:
        write_reference(c_gender)
    print("  " + c_age.to_json())
    print(
        "  the hub's bands (0-12, 13-17, 18-24, 25-34, ...) split fairface_dev's groups "
        "(10-19, 20-29, ...):\n  no band correction in those bands can be fitted on it."
    )
    timing(c_gender, c_age)
    print(f"\nrun time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
