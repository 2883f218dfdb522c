"""Population shares ("38% of watchers were women") corrected for the models' known errors.

Per-person errors that lean one way do not average out: if women over 50 are called men
three times as often as the reverse, the share of women is biased however many people
are counted. This module turns per-person estimates into shares in three ways:

- **naive**: classify and count (``cc``: the share of people whose likeliest class is
  k) and the mean of the calibrated posteriors (``pcc``);
- **adjusted classify and count** (``acc``, ``pacc``): the reference set's confusion
  rates ``R[k][j]`` = P(predicted j | true k) say what a population with true shares
  ``pi`` looks like, ``q = R^T pi``; the shares are the maximum-likelihood ``pi`` on the
  simplex for the ``q`` observed (``pacc`` uses mean posteriors for both ``R`` and ``q``);
- **EM** (``em``; Saerens, Latinne and Decaestecker 2002): re-weights the posteriors
  for a new prior until the prior is their mean; it trusts the posteriors to be
  calibrated for the reference prior, which biased errors break.

The 90% interval takes both sources of error: the population's predicted shares (a
multinomial sample of n people) and every row of the reference confusion counts (a
multinomial sample of that class's reference faces), by the delta method through the
inverse (or, with ``draws``, by Dirichlet draws of both, solved again per draw). It works
on K numbers, not on the people, so a hub request costs the same for 100 or 100,000
people. It does not cover a deployment whose errors differ from the reference's.

Pure Python and ``math``: the hub imports this and may not import NumPy (``.importlinter``).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final, Literal

Method = Literal["cc", "pcc", "acc", "pacc", "em"]
METHODS: Final[tuple[Method, ...]] = ("cc", "pcc", "acc", "pacc", "em")
LEVEL: Final = 0.9
JEFFREYS: Final = 0.5  # Dirichlet pseudo-count per cell
PIVOT_EPS: Final = 1e-9  # below this the rate matrix cannot tell classes apart
EM_TOL: Final = 1e-8
EM_MAX_ITER: Final = 1000

Matrix = list[list[float]]


class CorrectionError(ValueError):
    """The correction cannot be applied: no people, a class without reference faces, or
    a reference on which two classes are predicted alike (the shares are then not
    identifiable; use the naive shares and say so)."""


@dataclass(frozen=True, slots=True)
class Correction:
    """What a model set is known to do on one attribute, measured on a labelled reference.

    ``hard[k][j]``: reference faces of true class k whose likeliest class was j;
    ``soft[k][j]``: the sum over those faces of their posterior for class j. Only counts
    are kept, so the interval can resample them and the JSON says exactly what was seen.
    """

    attribute: str
    classes: tuple[str, ...]
    hard: tuple[tuple[int, ...], ...]
    soft: tuple[tuple[float, ...], ...]
    fitted_on: str
    model_set: str = ""

    def __post_init__(self) -> None:
        k = len(self.classes)
        if k < 2:
            raise CorrectionError("a correction needs at least two classes")
        for name, table in (("hard", self.hard), ("soft", self.soft)):
            if len(table) != k or any(len(row) != k for row in table):
                raise CorrectionError(f"{name} must be {k}x{k} (true x predicted)")
            if any(v < 0 for row in table for v in row):
                raise CorrectionError(f"{name} holds a negative count")
        empty = [c for c, row in zip(self.classes, self.hard, strict=True) if sum(row) == 0]
        if empty:
            raise CorrectionError(f"no reference faces of class {', '.join(empty)}")

    @property
    def reference_counts(self) -> tuple[int, ...]:
        """Reference faces per true class."""
        return tuple(sum(row) for row in self.hard)

    @property
    def reference_prior(self) -> tuple[float, ...]:
        """The reference set's true class shares (what EM takes as the training prior)."""
        counts = self.reference_counts
        return tuple(c / sum(counts) for c in counts)

    def rates(self, soft: bool = False) -> Matrix:
        """``R[k][j]`` = P(predicted j | true k), from the hard or the soft counts."""
        table = self.soft if soft else self.hard
        return [[v / sum(row) for v in row] for row in table]

    def to_json(self) -> str:
        """The correction as JSON (``from_json`` reads it back)."""
        return json.dumps(
            {
                "attribute": self.attribute,
                "classes": list(self.classes),
                "hard": [list(r) for r in self.hard],
                "soft": [[round(v, 6) for v in r] for r in self.soft],
                "fitted_on": self.fitted_on,
                "model_set": self.model_set,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Correction:
        """A correction ``to_json`` wrote."""
        data = json.loads(text)
        return cls(
            str(data["attribute"]),
            tuple(str(c) for c in data["classes"]),
            tuple(tuple(int(v) for v in r) for r in data["hard"]),
            tuple(tuple(float(v) for v in r) for r in data["soft"]),
            str(data["fitted_on"]),
            str(data.get("model_set", "")),
        )


def fit_correction(
    attribute: str,
    classes: Sequence[str],
    labels: Sequence[int],
    posteriors: Sequence[Sequence[float]],
    fitted_on: str,
    model_set: str = "",
    predicted: Sequence[int] | None = None,
) -> Correction:
    """Count, on a labelled reference, what the models say for each true class.

    ``predicted``: each face's reported class where it is not the likeliest one (the
    hub's age band comes from the expected age, not from the likeliest band).
    """
    k = len(classes)
    hard = [[0] * k for _ in range(k)]
    soft = [[0.0] * k for _ in range(k)]
    said = predicted if predicted is not None else [_argmax(p) for p in posteriors]
    for label, p, guess in zip(labels, posteriors, said, strict=True):
        hard[label][guess] += 1
        for j in range(k):
            soft[label][j] += p[j]
    return Correction(
        attribute,
        tuple(classes),
        tuple(tuple(r) for r in hard),
        tuple(tuple(r) for r in soft),
        fitted_on,
        model_set,
    )


@dataclass(frozen=True, slots=True)
class Shares:
    """Estimated shares per class and their interval (``level``, e.g. 90%)."""

    method: Method
    n: int
    estimate: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    level: float = LEVEL


def _argmax(p: Sequence[float]) -> int:
    return max(range(len(p)), key=p.__getitem__)


def predicted_counts(posteriors: Sequence[Sequence[float]], k: int) -> list[int]:
    """People per likeliest class (what the hub's rollups already count)."""
    counts = [0] * k
    for p in posteriors:
        counts[_argmax(p)] += 1
    return counts


def mean_posterior(posteriors: Sequence[Sequence[float]], k: int) -> list[float]:
    """The mean of the per-person posteriors."""
    if not posteriors:
        raise CorrectionError("no people: shares are undefined")
    total = [0.0] * k
    for p in posteriors:
        for j in range(k):
            total[j] += p[j]
    return [t / len(posteriors) for t in total]


def _solve(a: Matrix, b: Sequence[float]) -> list[float] | None:
    """``a x = b`` by Gaussian elimination with partial pivoting; None if singular."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < PIVOT_EPS:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            if f:
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def _project(x: Sequence[float]) -> list[float]:
    """The nearest point on the probability simplex (Duchi et al. 2008)."""
    u = sorted(x, reverse=True)
    total, theta = 0.0, 0.0
    for j, v in enumerate(u, start=1):
        total += v
        if v - (total - 1.0) / j > 0:
            theta = (total - 1.0) / j
    return [max(v - theta, 0.0) for v in x]


def adjust(observed: Sequence[float], rates: Matrix) -> list[float]:
    """The true shares ``pi`` that explain the observed predicted shares ``q = R^T pi``:
    the exact inverse, projected onto the simplex when noise (or a class the population
    barely has) pushes it outside. Raises ``CorrectionError`` when the rates cannot
    tell the classes apart."""
    k = len(observed)
    a = [[rates[t][j] for t in range(k)] for j in range(k)]  # a[j][t] = R[t][j]
    x = _solve(a, observed)
    if x is None:
        raise CorrectionError("the reference predicts two classes alike: not identifiable")
    return _project(x)


def em_priors(
    posteriors: Sequence[Sequence[float]],
    reference_prior: Sequence[float],
    tol: float = EM_TOL,
    max_iter: int = EM_MAX_ITER,
    weights: Sequence[float] | None = None,
) -> tuple[list[float], int]:
    """Saerens-Latinne-Decaestecker EM: the new prior and the iterations it took.

    Each person's posterior is re-weighted by ``new / reference`` prior and renormalised;
    the new prior is the mean of the re-weighted posteriors, until it stops moving.
    ``weights``: how many people share each posterior (the hub groups identical ones).
    """
    k = len(reference_prior)
    if not posteriors:
        raise CorrectionError("no people: shares are undefined")
    if min(reference_prior) <= 0.0:
        raise CorrectionError("the reference prior must be positive for every class")
    counts = [1.0] * len(posteriors) if weights is None else [float(w) for w in weights]
    if len(counts) != len(posteriors) or min(counts) < 0 or sum(counts) <= 0:
        raise CorrectionError("one non-negative weight per posterior, not all zero")
    people = sum(counts)
    prior = [sum(c * p[t] for c, p in zip(counts, posteriors, strict=True)) / people
             for t in range(k)]  # fmt: skip
    for iteration in range(1, max_iter + 1):
        weight = [prior[t] / reference_prior[t] for t in range(k)]
        total = [0.0] * k
        for c, p in zip(counts, posteriors, strict=True):
            w = [p[t] * weight[t] for t in range(k)]
            s = sum(w)
            if s > 0:
                for t in range(k):
                    total[t] += c * w[t] / s
        new = [v / people for v in total]
        change = max(abs(u - v) for u, v in zip(new, prior, strict=True))
        prior = new
        if change < tol:
            return prior, iteration
    return prior, max_iter


def _dirichlet(rng: random.Random, counts: Sequence[float]) -> list[float]:
    draws = [rng.gammavariate(c + JEFFREYS, 1.0) for c in counts]
    total = sum(draws)
    return [d / total for d in draws]


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (pos - low) * (sorted_values[high] - sorted_values[low])


def shares(
    posteriors: Sequence[Sequence[float]],
    correction: Correction | None = None,
    method: Method = "acc",
    level: float = LEVEL,
    draws: int = 0,
    seed: int = 0,
) -> Shares:
    """Shares of a population from its per-person calibrated posteriors.

    ``cc``/``pcc`` need no correction; ``acc``/``pacc``/``em`` need one for the same
    attribute. ``em`` gets its point estimate only (its interval would resample the
    people, too slow for a request); it borrows ``pacc``'s (``recentred``). ``draws``:
    see ``from_observed``.
    """
    if not posteriors:
        raise CorrectionError("no people: shares are undefined")
    k = len(posteriors[0])
    n = len(posteriors)
    if method in ("cc", "acc"):
        observed = [float(c) / n for c in predicted_counts(posteriors, k)]
    else:
        observed = mean_posterior(posteriors, k)
    if method == "em":
        if correction is None:
            raise CorrectionError("em needs a correction (the reference prior)")
        point, _ = em_priors(posteriors, correction.reference_prior)
        return recentred(point, from_observed(observed, n, correction, "pacc", level, draws, seed))
    return from_observed(observed, n, correction, method, level, draws, seed)


def recentred(point: Sequence[float], band: Shares) -> Shares:
    """EM's shares with ``pacc``'s interval moved onto them (same half-widths, clipped):
    an approximation, since EM's own interval would resample the people."""
    low = [
        min(max(p - (b - lo), 0.0), 1.0)
        for p, b, lo in zip(point, band.estimate, band.low, strict=True)
    ]
    high = [
        min(max(p + (hi - b), 0.0), 1.0)
        for p, b, hi in zip(point, band.estimate, band.high, strict=True)
    ]
    return Shares("em", band.n, tuple(point), tuple(low), tuple(high), band.level)


def from_observed(
    observed: Sequence[float],
    n: int,
    correction: Correction | None,
    method: Method = "acc",
    level: float = LEVEL,
    draws: int = 0,
    seed: int = 0,
) -> Shares:
    """Shares from the observed predicted shares of ``n`` people (for ``cc``/``acc``:
    the hub's counts per predicted class divided by ``n``; for ``pcc``/``pacc``: the
    mean posterior). The cost does not depend on ``n``.

    The interval: with ``draws`` = 0 the delta method (analytic, about 1 ms); otherwise
    that many Dirichlet draws of the population's and the reference's counts, each
    solved again (percentile interval; deterministic for a ``seed``).
    """
    if n <= 0:
        raise CorrectionError("no people: shares are undefined")
    k = len(observed)
    table: Sequence[Sequence[float]] = []
    if method in ("acc", "pacc", "em"):
        if correction is None:
            raise CorrectionError(f"{method} needs a correction")
        if len(correction.classes) != k:
            raise CorrectionError(f"the correction has {len(correction.classes)} classes, not {k}")
        table = correction.hard if method == "acc" else correction.soft
        point = adjust(observed, correction.rates(soft=method != "acc"))
    else:
        point = list(observed)
    if draws > 0:
        low, high = _drawn_interval(observed, n, table, level, draws, seed)
    else:
        low, high = _delta_interval(observed, n, table, point, level)
    return Shares(method, n, tuple(point), tuple(low), tuple(high), level)


def _multinomial_cov(counts: Sequence[float], n: float) -> Matrix:
    """Covariance of the shares of ``n`` draws from the (Jeffreys-smoothed) proportions."""
    k = len(counts)
    p = [(c + JEFFREYS) / (sum(counts) + JEFFREYS * k) for c in counts]
    return [[((p[i] if i == j else 0.0) - p[i] * p[j]) / n for j in range(k)] for i in range(k)]


def _delta_interval(
    observed: Sequence[float],
    n: int,
    table: Sequence[Sequence[float]],
    point: Sequence[float],
    level: float,
) -> tuple[list[float], list[float]]:
    """``pi = A^-1 q``: Cov(pi) = A^-1 (Cov(q) + sum_t pi_t^2 Cov(R_t)) A^-T, each row
    ``R_t`` of the rates a multinomial share of its ``n_t`` reference faces."""
    k = len(observed)
    cov = _multinomial_cov([q * n for q in observed], n)
    if table:
        for t, row in enumerate(table):
            row_cov = _multinomial_cov(row, max(sum(row), 1.0))
            for i in range(k):
                for j in range(k):
                    cov[i][j] += point[t] ** 2 * row_cov[i][j]
        a = [[table[t][j] / sum(table[t]) for t in range(k)] for j in range(k)]
        columns = [_solve(a, [1.0 if i == c else 0.0 for i in range(k)]) for c in range(k)]
        if any(col is None for col in columns):
            raise CorrectionError("the reference predicts two classes alike: not identifiable")
        inv = [[col[i] for col in columns if col is not None] for i in range(k)]
        cov = [
            [
                sum(inv[i][a_] * cov[a_][b] * inv[j][b] for a_ in range(k) for b in range(k))
                for j in range(k)
            ]
            for i in range(k)
        ]
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    sd = [math.sqrt(max(cov[i][i], 0.0)) for i in range(k)]
    low = [min(max(point[i] - z * sd[i], 0.0), 1.0) for i in range(k)]
    high = [min(max(point[i] + z * sd[i], 0.0), 1.0) for i in range(k)]
    return low, high


def _drawn_interval(
    observed: Sequence[float],
    n: int,
    table: Sequence[Sequence[float]],
    level: float,
    draws: int,
    seed: int,
) -> tuple[list[float], list[float]]:
    """Percentile interval of ``draws`` Dirichlet draws of both sets of counts."""
    k = len(observed)
    rng = random.Random(seed)
    sampled: Matrix = []
    counts = [q * n for q in observed]
    for _ in range(draws):
        q = _dirichlet(rng, counts)
        if not table:
            sampled.append(q)
            continue
        try:
            sampled.append(adjust(q, [_dirichlet(rng, row) for row in table]))
        except CorrectionError:
            continue  # a draw that happens to be singular says nothing
    if not sampled:
        raise CorrectionError("every interval draw was singular")
    tail = (1.0 - level) / 2.0
    columns = [sorted(d[t] for d in sampled) for t in range(k)]
    return [_quantile(c, tail) for c in columns], [_quantile(c, 1.0 - tail) for c in columns]
