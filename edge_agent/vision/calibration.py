"""From the networks' raw outputs to calibrated gender and age distributions.

Pure NumPy on what the members of a model set returned (``RawOutputs``), so benchmarks
can fit and score calibrations on stored outputs without running a network. face-api's
age is one number; it becomes a distribution with the spread its errors have on held-out
faces (``age_distribution``). An ensemble averages its members' outputs first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.vision.align import variant_set
from edge_agent.vision.model_sets import MEMBER_WEIGHTS, MODEL_SETS, Member


@dataclass(frozen=True, slots=True)
class Calibration:
    """How a model set's outputs become calibrated distributions.

    ``gender_temperature`` divides the log-odds of the (variant- and member-averaged) male
    probability: above 1 less confident, below 1 more. Age: the set's point estimate
    (dlib: the expected value of its 81 classes; face-api: its regression; an ensemble:
    their weighted mean) becomes a Gaussian over the classes with that mean and spread
    ``a + b * age + c * s`` years (``age_sigma`` = (a, b, c)), where ``s`` is the spread the
    networks themselves show: the standard deviation of the mixture of dlib's
    distribution and face-api's point (0 for face-api alone, the members' disagreement
    and dlib's own spread in an ensemble).
    """

    gender_temperature: float = 1.0
    age_sigma: tuple[float, float, float] = (2.0, 0.2, 0.0)


# Age spreads fitted on fairface_dev (FairFace, Kärkkäinen and Joo, CC BY 4.0) by
# bench/calibration.py (docs/models.md, "Calibration"), by the likelihood of the labelled
# age groups, reported held out on utkface_dev and cross-fitted on fairface_dev. Gender:
# T = 1 (the networks' own confidence, nothing fitted): the temperature fitted on
# fairface_dev (1.5-3.2) made gender confidence and female shares worse on both sets it
# did not see, for every set, so it is printed by the bench but not shipped.
CALIBRATION: Final[Mapping[str, Calibration]] = {
    "dlib-mixed": Calibration(1.0, (7.75, 0.0375, 0.75)),
    "dlib-int8": Calibration(1.0, (7.75, 0.0375, 0.75)),
    "dlib-fp32": Calibration(1.0, (7.5, 0.0375, 0.812)),
    "faceapi-fp16": Calibration(1.0, (7.25, 0.1, 0.0)),
    "faceapi-fp32": Calibration(1.0, (7.25, 0.1, 0.0)),
    "ensemble-int8": Calibration(1.0, (4.25, 0.0125, 0.875)),
    "ensemble-fp32": Calibration(1.0, (4.25, 0.0125, 0.875)),
    # Its dlib member's calibration (dlib-mixed's as the heads' fusion was fitted with it:
    # `edge-agent train-heads`; refit the fusion after changing it). heads.py fuses on top.
    "dlib-heads": Calibration(1.0, (7.75, 0.0375, 0.75)),
}
assert set(CALIBRATION) == set(MODEL_SETS), "every model set has its calibration"


@dataclass(frozen=True, slots=True)
class RawOutputs:
    """One member's uncalibrated outputs for a batch of faces, per variant chip.

    ``gender`` ``[N, V, 2]``; ``age`` ``[N, V, 81]`` (dlib) or ``[N, V]`` years (face-api).
    """

    gender: NDArray[np.float32]
    age: NDArray[np.float32]


def gender_calibrated(male: NDArray[np.floating], temperature: float) -> NDArray[np.float32]:
    """``[N, 2]`` (female, male) from male probabilities with their log-odds / ``T``."""
    p = np.clip(np.asarray(male, np.float64), 1e-7, 1.0 - 1e-7)
    scaled = 1.0 / (1.0 + np.exp(-np.log(p / (1.0 - p)) / temperature))
    return np.stack([1.0 - scaled, scaled], axis=-1).astype(np.float32)


def _normal_cdf(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The standard normal CDF (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf = 1.0 - poly * np.exp(-z * z)
    result: NDArray[np.float64] = 0.5 * (1.0 + np.sign(x) * erf)
    return result


def age_distribution(
    years: NDArray[np.floating] | Sequence[float],
    spread: NDArray[np.floating] | Sequence[float] | float,
    sigma: tuple[float, float, float],
    class_ages: Sequence[float],
) -> NDArray[np.float32]:
    """Point ages as distributions over the age classes.

    A Gaussian of standard deviation ``a + b * age + c * spread`` (``sigma`` = (a, b, c))
    is binned onto the classes, the first and last class taking everything below and
    above them (dlib's oldest class holds everyone older than 80), and shifted so that
    each distribution's expected value is its point age (clipped to the classes' range),
    as dlib's ages are expected values. A point age at the very end of the range leaves
    no room for spread: its distribution is the end class alone.
    """
    ages = np.asarray(class_ages, np.float64)
    target = np.clip(np.asarray(years, np.float64).reshape(-1), ages[0], ages[-1])
    extra = np.broadcast_to(np.asarray(spread, np.float64).reshape(-1), target.shape)
    width = np.maximum(sigma[0] + sigma[1] * target + sigma[2] * extra, 0.5)[:, None]
    edges = np.concatenate([[-np.inf], (ages[1:] + ages[:-1]) / 2.0, [np.inf]])

    def dist(centre: NDArray[np.float64]) -> NDArray[np.float64]:
        cdf = _normal_cdf((edges[None, :] - centre[:, None]) / width)
        p = np.maximum(np.diff(cdf, axis=1), 0.0)
        result: NDArray[np.float64] = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
        return result

    # The mean rises monotonically with the Gaussian's centre: bisect for it.
    low, high = target - 10.0 * width[:, 0] - 1.0, target + 10.0 * width[:, 0] + 1.0
    for _ in range(50):
        middle = (low + high) / 2.0
        above = dist(middle) @ ages > target
        high, low = np.where(above, middle, high), np.where(above, low, middle)
    return dist((low + high) / 2.0).astype(np.float32).reshape(*np.shape(years), len(ages))


def select_variants(raw: RawOutputs, variants: str) -> RawOutputs:
    """The chips of a named variant set, picked out of the 14 of ``"full"``."""
    full = variant_set("full")
    index = [full.index(v) for v in variant_set(variants)]
    return RawOutputs(raw.gender[:, index], raw.age[:, index])


@dataclass(frozen=True, slots=True)
class Points:
    """A set's uncalibrated point estimates for N faces: male probability, mean age and
    the networks' own spread in years."""

    male: NDArray[np.float64]
    age: NDArray[np.float64]
    spread: NDArray[np.float64]


def points(
    members: Sequence[Member], raws: Sequence[RawOutputs], class_ages: Sequence[float]
) -> Points:
    """Average each member's variants, then the members (``MEMBER_WEIGHTS``)."""
    weights = np.array([MEMBER_WEIGHTS[m] for m in members], np.float64)
    weights /= weights.sum()
    grid = np.asarray(class_ages, np.float64)
    male = np.zeros(len(raws[0].gender))
    first, second = np.zeros_like(male), np.zeros_like(male)
    for w, member, raw in zip(weights, members, raws, strict=True):
        male += w * raw.gender.mean(axis=1)[:, 1]
        if member == "dlib":  # a distribution over the classes
            dist = raw.age.mean(axis=1).astype(np.float64)
            first += w * (dist @ grid)
            second += w * (dist @ grid**2)
        else:  # years
            years = raw.age.mean(axis=1).astype(np.float64)
            first += w * years
            second += w * years**2
    return Points(male, first, np.sqrt(np.maximum(second - first**2, 0.0)))


def calibrated(
    found: Points, calibration: Calibration, class_ages: Sequence[float]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Calibrated ``[N, 2]`` gender and ``[N, 81]`` age distributions."""
    gender = gender_calibrated(found.male, calibration.gender_temperature)
    a, b, c = calibration.age_sigma
    return gender, age_distribution(found.age, found.spread, (a, b, c), class_ages)


def finish(
    members: Sequence[Member],
    raws: Sequence[RawOutputs],
    calibration: Calibration,
    class_ages: Sequence[float],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A set's outputs (one ``RawOutputs`` per member) as calibrated distributions."""
    return calibrated(points(members, raws, class_ages), calibration, class_ages)
