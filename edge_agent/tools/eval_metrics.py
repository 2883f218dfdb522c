"""The population-level figures ``edge-agent eval`` adds to per-image accuracy.

Balanced gender accuracy (the mean recall of each true class, so a set that is 74% men
cannot hide a weak recall of women), age-group accuracy (the expected age put into
FairFace's groups, for sets labelled in groups rather than years) and the female share
of a set: true, naive (mean calibrated posterior) and corrected by EM prior
re-estimation (``edge_agent.shares.em_priors``) with a people-bootstrap 90% interval.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.shares import EM_MAX_ITER, EM_TOL, LEVEL, em_priors, mean_posterior

# The groups FairFace labels age in (fairface_dev's ``age_group`` column).
AGE_GROUPS: Final[tuple[str, ...]] = (
    "0-2",
    "3-9",
    "10-19",
    "20-29",
    "30-39",
    "40-49",
    "50-59",
    "60-69",
    "70+",
)
_GROUP_STARTS: Final = (3.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0)  # lower bounds, 2nd on

# EM takes the posteriors as calibrated for this prior and re-weights them for the set's.
# fairface_dev is gender-balanced by construction (135/135). It is the only set here a
# shipped constant may be fitted on (CC BY 4.0; utkface_dev and LFW are evaluation-only),
# so no confusion matrix or other prior ships: with LFW's 26%-female prior EM doubles
# the error on utkface_dev (docs/models.md, "Population shares").
REFERENCE_FEMALE_PRIOR: Final = 0.5
FEMALE: Final = "female"
BOOTSTRAP_DRAWS: Final = 400
BOOTSTRAP_SEED: Final = 0


def age_group(age: float) -> str:
    """The FairFace group of an age in years (2.9 is still 0-2: ages are whole years)."""
    return AGE_GROUPS[bisect.bisect_right(_GROUP_STARTS, age)]


def balanced_accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float | None:
    """The mean over the true classes present of the share of each predicted right."""
    recalls = []
    for label in sorted(set(truth)):
        mine = [p for t, p in zip(truth, predicted, strict=True) if t == label]
        recalls.append(sum(p == label for p in mine) / len(mine))
    return sum(recalls) / len(recalls) if recalls else None


def group_accuracy(truth: Sequence[str], predicted_ages: Sequence[float]) -> float | None:
    """The share of faces whose predicted (expected) age falls in their labelled group."""
    if not truth:
        return None
    hits = [age_group(a) == t for t, a in zip(truth, predicted_ages, strict=True)]
    return sum(hits) / len(hits)


@dataclass(frozen=True, slots=True)
class FemaleShare:
    """A set's share of women: labelled, naive and EM-corrected with its interval."""

    true: float
    naive: float  # mean calibrated posterior ("pcc")
    corrected: float  # EM from REFERENCE_FEMALE_PRIOR
    low: float  # the corrected share's LEVEL (90%) interval, resampling the people
    high: float


def _em_female(p_female: NDArray[np.float64], prior: float) -> NDArray[np.float64]:
    """``shares.em_priors`` for two classes, vectorised over bootstrap rows ``[B, n]``."""
    share = p_female.mean(axis=1)
    for _ in range(EM_MAX_ITER):
        wf = p_female * (share / prior)[:, None]
        wm = (1.0 - p_female) * ((1.0 - share) / (1.0 - prior))[:, None]
        new = (wf / np.maximum(wf + wm, 1e-300)).mean(axis=1)
        done = float(np.max(np.abs(new - share))) < EM_TOL
        share = new
        if done:
            break
    return np.asarray(share, np.float64)


def female_share(
    truth: Sequence[str],
    p_female: Sequence[float],
    prior: float = REFERENCE_FEMALE_PRIOR,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
) -> FemaleShare | None:
    """The female share of labelled faces and what the models make of it.

    ``p_female``: each face's calibrated posterior for female. The interval is the
    percentile interval of EM re-run on ``draws`` resamples of the faces (sampling noise
    only: not the error of assuming these faces err as the reference's do), widened to
    hold the estimate where a tiny sample skews it.
    """
    if not truth:
        return None
    posteriors = [(p, 1.0 - p) for p in p_female]
    naive = mean_posterior(posteriors, 2)[0]
    (corrected, _), _ = em_priors(posteriors, (prior, 1.0 - prior))
    rng = np.random.default_rng(seed)
    values = np.asarray(p_female, np.float64)
    picks = rng.integers(0, len(values), size=(draws, len(values)))
    drawn = _em_female(values[picks], prior)
    tail = (1.0 - LEVEL) / 2.0
    low, high = (float(v) for v in np.quantile(drawn, [tail, 1.0 - tail]))
    return FemaleShare(
        sum(t == FEMALE for t in truth) / len(truth),
        naive,
        corrected,
        min(low, corrected),
        max(high, corrected),
    )
