"""Many crops of one person into one gender and one age, with honest uncertainty.

Probabilities are averaged with the crops' quality weights (a sharp frontal face counts
more than a blurred profile). The age is the expected value of the averaged 81-class
distribution, and its range the central interval holding ``AGE_INTERVAL`` of its mass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.contract import AGE_BAND_LOWER_BOUNDS, AgeEstimate, Gender, GenderEstimate
from edge_agent.vision.detections import FaceEstimate

AGE_INTERVAL: Final = 0.8


def combine(
    estimates: Sequence[FaceEstimate], weights: Sequence[float]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Quality-weighted mean of gender ``[2]`` and age ``[81]`` probabilities."""
    if not estimates:
        raise ValueError("nothing to combine")
    w = np.asarray(weights, np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(estimates), 1.0 / len(estimates))
    gender = np.sum([e.gender * wi for e, wi in zip(estimates, w, strict=True)], axis=0)
    age = np.sum([e.age * wi for e, wi in zip(estimates, w, strict=True)], axis=0)
    return gender / gender.sum(), age / age.sum()


def gender_estimate(probabilities: NDArray[np.float64], labels: Sequence[str]) -> GenderEstimate:
    """The likelier label and its probability."""
    best = int(np.argmax(probabilities))
    return GenderEstimate(
        value=Gender(labels[best]), confidence=round(float(probabilities[best]), 4)
    )


def age_estimate(probabilities: NDArray[np.float64], class_ages: Sequence[float]) -> AgeEstimate:
    """Expected age and the central ``AGE_INTERVAL`` interval of the distribution."""
    ages = np.asarray(class_ages, np.float64)
    expected = float(probabilities @ ages)
    cdf = np.cumsum(probabilities)
    tail = (1.0 - AGE_INTERVAL) / 2.0
    low_i = int(np.searchsorted(cdf, tail))
    high_i = min(int(np.searchsorted(cdf, 1.0 - tail)), len(ages) - 1)
    value = round(expected, 1)
    low = min(round(float(ages[low_i]), 1), value)
    high = max(round(float(ages[high_i]), 1), value)
    # The mass of the interval actually reported (it may have been stretched to the mean).
    mass = float(probabilities[(ages >= low) & (ages <= high)].sum())
    return AgeEstimate(value=value, low=low, high=high, confidence=round(min(1.0, mass), 3))


def female_probability(probabilities: NDArray[np.float64], labels: Sequence[str]) -> float:
    """P(female), rounded for the wire: what the hub's corrected shares start from."""
    return round(float(probabilities[list(labels).index(Gender.FEMALE.value)]), 4)


def band_probabilities(
    probabilities: NDArray[np.float64], class_ages: Sequence[float]
) -> list[float]:
    """The age distribution's mass per contract age band (``AGE_BAND_LOWER_BOUNDS``),
    rounded to 3 decimals: the hub's age shares start from these."""
    ages = np.asarray(class_ages, np.float64)
    band = np.searchsorted(np.asarray(AGE_BAND_LOWER_BOUNDS, np.float64), ages, side="right") - 1
    mass = np.bincount(band, weights=probabilities, minlength=len(AGE_BAND_LOWER_BOUNDS))
    mass = mass / mass.sum()
    return [round(float(m), 3) for m in mass]
