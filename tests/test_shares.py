"""``edge_agent.shares`` on synthetic populations whose true shares are known."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import pytest

from edge_agent.shares import (
    Correction,
    CorrectionError,
    adjust,
    em_priors,
    fit_correction,
    from_observed,
    mean_posterior,
    predicted_counts,
    shares,
)

# True class x predicted class: women called men 20% of the time, men women 5%.
GENDER_RATES = [[0.80, 0.20], [0.05, 0.95]]
AGE_RATES = [
    [0.70, 0.20, 0.05, 0.05],
    [0.15, 0.60, 0.20, 0.05],
    [0.05, 0.20, 0.60, 0.15],
    [0.02, 0.08, 0.30, 0.60],
]


def one_hot(j: int, k: int, sure: float = 0.9) -> list[float]:
    p = [(1.0 - sure) / (k - 1)] * k
    p[j] = sure
    return p


def sample(
    rng: random.Random, prior: Sequence[float], rates: Sequence[Sequence[float]], n: int
) -> tuple[list[int], list[list[float]]]:
    """True labels and posteriors whose likeliest class follows ``rates``."""
    k = len(prior)
    labels = rng.choices(range(k), prior, k=n)
    return labels, [one_hot(rng.choices(range(k), rates[t])[0], k) for t in labels]


def reference(
    rates: Sequence[Sequence[float]], per_class: int, seed: int = 1, name: str = "synthetic"
) -> Correction:
    rng = random.Random(seed)
    k = len(rates)
    labels = [t for t in range(k) for _ in range(per_class)]
    posts = [one_hot(rng.choices(range(k), rates[t])[0], k) for t in labels]
    return fit_correction("x", [str(i) for i in range(k)], labels, posts, name)


def test_acc_recovers_a_known_gender_prior() -> None:
    correction = reference(GENDER_RATES, 5000)
    _, posts = sample(random.Random(2), [0.6, 0.4], GENDER_RATES, 20_000)
    naive = shares(posts, method="cc")
    fixed = shares(posts, correction, "acc")
    assert naive.estimate[0] == pytest.approx(0.5, abs=0.015)  # 0.6 * 0.8 + 0.4 * 0.05
    assert fixed.estimate[0] == pytest.approx(0.6, abs=0.015)
    assert fixed.low[0] < 0.6 < fixed.high[0]
    assert sum(fixed.estimate) == pytest.approx(1.0)


def test_acc_and_pacc_recover_a_known_four_class_prior() -> None:
    correction = reference(AGE_RATES, 5000)
    prior = [0.1, 0.4, 0.2, 0.3]
    _, posts = sample(random.Random(3), prior, AGE_RATES, 30_000)
    for method in ("acc", "pacc"):
        got = shares(posts, correction, method).estimate
        assert max(abs(g - p) for g, p in zip(got, prior, strict=True)) < 0.03, method


def test_adjust_is_the_exact_inverse_inside_the_simplex() -> None:
    prior = [0.25, 0.25, 0.4, 0.1]
    observed = [sum(prior[t] * AGE_RATES[t][j] for t in range(4)) for j in range(4)]
    assert adjust(observed, AGE_RATES) == pytest.approx(prior, abs=1e-12)


def test_em_converges_to_the_prior_when_posteriors_are_calibrated() -> None:
    """Scores N(+-1, 1); posteriors exact for a 50/50 reference; population 20/80."""
    rng = random.Random(4)
    posts = []
    for _ in range(20_000):
        x = rng.gauss(1.0 if rng.random() < 0.2 else -1.0, 1.0)
        female = 1.0 / (1.0 + math.exp(-2.0 * x))
        posts.append([female, 1.0 - female])
    prior, iterations = em_priors(posts, [0.5, 0.5])
    assert iterations < 1000
    assert prior[0] == pytest.approx(0.2, abs=0.02)
    assert mean_posterior(posts, 2)[0] > 0.25  # the naive mean is pulled toward 50/50


@pytest.mark.parametrize("draws", [0, 300])
def test_interval_coverage_is_near_nominal(draws: int) -> None:
    """90% intervals from a small reference (150 per class) and 500 people hold the
    truth about 90% of the time over repeats with fresh references and populations."""
    repeats = 300 if draws == 0 else 120
    hits = 0
    for r in range(repeats):
        correction = reference(GENDER_RATES, 150, seed=1000 + r)
        labels, posts = sample(random.Random(r), [0.4, 0.6], GENDER_RATES, 500)
        truth = labels.count(0) / len(labels)
        got = shares(posts, correction, "acc", draws=draws, seed=r)
        hits += got.low[0] <= truth <= got.high[0]
    assert 0.83 <= hits / repeats <= 0.97


def test_drawn_intervals_are_deterministic_for_a_seed() -> None:
    correction = reference(AGE_RATES, 100)
    _, posts = sample(random.Random(5), [0.25] * 4, AGE_RATES, 400)
    one = shares(posts, correction, "acc", draws=100, seed=7)
    assert one == shares(posts, correction, "acc", draws=100, seed=7)
    assert one != shares(posts, correction, "acc", draws=100, seed=8)


def test_a_class_absent_from_the_population_comes_out_near_zero() -> None:
    correction = reference(AGE_RATES, 3000)
    _, posts = sample(random.Random(6), [0.5, 0.5, 0.0, 0.0], AGE_RATES, 5000)
    got = shares(posts, correction, "acc")
    assert min(got.estimate) >= 0.0
    assert got.estimate[2] + got.estimate[3] < 0.03
    assert got.low[3] == 0.0


def test_an_empty_population_is_an_error() -> None:
    with pytest.raises(CorrectionError, match="no people"):
        shares([], reference(GENDER_RATES, 10), "acc")
    with pytest.raises(CorrectionError, match="no people"):
        from_observed([0.5, 0.5], 0, None, "cc")


def test_a_class_without_reference_faces_is_an_error() -> None:
    with pytest.raises(CorrectionError, match="no reference faces of class 1"):
        fit_correction("x", ["0", "1"], [0, 0], [[0.9, 0.1], [0.8, 0.2]], "synthetic")


def test_a_reference_that_cannot_tell_classes_apart_is_an_error() -> None:
    # Both classes predicted female 60% of the time: any prior explains any population.
    chance = Correction("gender", ("female", "male"), ((6, 4), (6, 4)), ((6, 4), (6, 4)), "x")
    with pytest.raises(CorrectionError, match="not identifiable"):
        shares([[0.7, 0.3]] * 10, chance, "acc")
    # The naive shares still answer.
    assert shares([[0.7, 0.3]] * 10, method="cc").estimate == (1.0, 0.0)


def test_corrected_methods_need_a_matching_correction() -> None:
    with pytest.raises(CorrectionError, match="needs a correction"):
        shares([[0.7, 0.3]], None, "acc")
    with pytest.raises(CorrectionError, match="4 classes, not 2"):
        shares([[0.7, 0.3]], reference(AGE_RATES, 10), "acc")


def test_correction_json_round_trip() -> None:
    correction = reference(AGE_RATES, 20, name="fairface_dev")
    back = Correction.from_json(correction.to_json())
    assert back.hard == correction.hard
    assert back.fitted_on == "fairface_dev"
    for got, want in zip(back.soft, correction.soft, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    assert sum(correction.reference_prior) == pytest.approx(1.0)


def test_naive_counts_and_means() -> None:
    posts = [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]
    assert predicted_counts(posts, 2) == [2, 1]
    assert mean_posterior(posts, 2) == pytest.approx([1.7 / 3, 1.3 / 3])


def test_ten_thousand_people_take_well_under_a_request() -> None:
    correction = reference(AGE_RATES, 50)
    _, posts = sample(random.Random(9), [0.25] * 4, AGE_RATES, 10_000)
    start = time.perf_counter()
    shares(posts, correction, "acc")
    assert time.perf_counter() - start < 0.5  # ~10 ms measured; loose for shared CI
