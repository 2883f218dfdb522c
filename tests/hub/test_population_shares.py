"""Population shares through the whole path: events with P(female) and age band
probabilities published over Mosquitto, stored by a running hub, answered by
``/v1/stats?shares=true`` and the daily report, checked against the same estimates
computed here by hand (NumPy, written from the formulas, not from the hub's code).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from edge_agent.contract import AGE_BAND_NAMES, PersonEvent
from edge_agent.shares_reference import GENDER_REFERENCE
from tests.conftest import HubFactory, make_event

Z90 = NormalDist().inv_cdf(0.95)
JEFFREYS = 0.5

# (P(female), how many watchers): the hub groups equal values, so several of each.
P_FEMALE = [(0.97, 9), (0.81, 6), (0.62, 4), (0.44, 5), (0.23, 8), (0.05, 10)]
# Each watcher's band probabilities (3 decimals, summing to 1), cycled over the watchers.
BANDS = [
    [0.0, 0.0, 0.1, 0.6, 0.3, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.05, 0.25, 0.5, 0.2, 0.0],
    [0.02, 0.08, 0.3, 0.4, 0.2, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4],
]


def _events(now: datetime) -> tuple[list[PersonEvent], list[float], list[list[float]]]:
    """Watchers with the inputs above, plus people the shares must leave out."""
    events: list[PersonEvent] = []
    ps: list[float] = []
    bands: list[list[float]] = []
    i = 0
    for p, count in P_FEMALE:
        for _ in range(count):
            band = BANDS[i % len(BANDS)]
            event = make_event(
                "dev-shares",
                "cam-1",
                last_seen=now - timedelta(minutes=5 + i),
                gender="female" if p >= 0.5 else "male",
                age=30.0,
                track_id=i,
            ).model_copy(update={"p_female": p, "age_bands": band})
            events.append(PersonEvent.model_validate_json(event.model_dump_json()))
            ps.append(p)
            bands.append(band)
            i += 1
    # A passer-by (no face), and watchers of an older agent (no P(female), no bands).
    events.append(make_event("dev-shares", "cam-1", gender=None, age=None, watcher=False,
                             track_id=900, last_seen=now - timedelta(minutes=3)))  # fmt: skip
    events += [make_event("dev-shares", "cam-1", track_id=901 + k,
                          last_seen=now - timedelta(minutes=2)) for k in range(3)]  # fmt: skip
    return events, ps, bands


def _smoothed_cov(counts: np.ndarray, n: float) -> np.ndarray:
    """Covariance of the shares of n draws from the Jeffreys-smoothed proportions."""
    p = (counts + JEFFREYS) / (counts.sum() + JEFFREYS * len(counts))
    return (np.diag(p) - np.outer(p, p)) / n


def _by_hand(ps: list[float], bands: list[list[float]]) -> dict[str, Any]:
    p = np.array(ps)
    n = len(p)
    # Naive: the mean posterior; its interval the sample's alone.
    q = np.array([p.mean(), 1 - p.mean()])
    naive_sd = np.sqrt(_smoothed_cov(q * n, n)[0, 0])
    # EM for two classes from the reference prior (Saerens et al. 2002).
    prior0 = np.array([sum(r) for r in GENDER_REFERENCE.hard], float)
    prior0 /= prior0.sum()
    pi = q.copy()
    for _ in range(10_000):
        w = np.stack([p * pi[0] / prior0[0], (1 - p) * pi[1] / prior0[1]], axis=1)
        new = (w / w.sum(axis=1, keepdims=True)).mean(axis=0)
        done = np.abs(new - pi).max() < 1e-12
        pi = new
        if done:
            break
    # Its interval: the soft-confusion (pacc) delta method, moved onto EM's estimate.
    soft = np.array(GENDER_REFERENCE.soft, float)
    rates = soft / soft.sum(axis=1, keepdims=True)  # R[t][j] = P(said j | true t)
    a = rates.T
    pacc = np.linalg.solve(a, q)
    cov = _smoothed_cov(q * n, n)
    for t in range(2):
        cov += pacc[t] ** 2 * _smoothed_cov(soft[t], soft[t].sum())
    inv = np.linalg.inv(a)
    pacc_sd = np.sqrt(np.diag(inv @ cov @ inv.T))
    assert 0 <= pacc[0] <= 1  # no projection onto the simplex needed for these inputs
    # Age: the mean band probabilities, the sample's interval per band.
    mean_bands = np.array(bands).mean(axis=0)
    mean_bands /= mean_bands.sum()
    band_sd = np.sqrt(np.diag(_smoothed_cov(mean_bands * n, n)))
    return {
        "n": n,
        "naive": (q[0], q[0] - Z90 * naive_sd, q[0] + Z90 * naive_sd),
        "corrected": (pi[0], pi[0] - Z90 * pacc_sd[0], pi[0] + Z90 * pacc_sd[0]),
        "bands": {
            name: (m, max(m - Z90 * sd, 0.0), min(m + Z90 * sd, 1.0))
            for name, m, sd in zip(AGE_BAND_NAMES, mean_bands, band_sd, strict=True)
        },
    }


def _close(answer: dict[str, float], expected: tuple[float, float, float]) -> None:
    got = (answer["share"], answer["low"], answer["high"])
    assert got == pytest.approx(expected, abs=6e-4), (got, expected)


def test_corrected_shares_match_a_computation_by_hand(
    hub_factory: HubFactory, publish_events: Any, wait_until: Any
) -> None:
    hub = hub_factory.start()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    if now.hour == 0 and now.minute < 45:  # the events must fall on today's report
        now += timedelta(minutes=45)
    events, ps, bands = _events(now)
    publish_events(hub.topic_root, events)
    start = (now - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    end = (now + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    query = f"/v1/stats?start={start}&end={end}&device_id=dev-shares"
    wait_until(lambda: hub.get(query)["totals"]["total"] == len(events), 30, "stored")

    assert hub.get(query)["shares"] is None  # opt-in: the plain statistics stay one scan
    shares = hub.get(query + "&shares=true")["shares"]
    expected = _by_hand(ps, bands)
    assert shares["level"] == 0.9
    gender = shares["gender"]
    assert gender["watchers"] == expected["n"]  # the old agent's watchers are left out
    assert gender["reference"] == "fairface_dev (dlib-mixed)"
    _close(gender["naive"], expected["naive"])
    _close(gender["corrected"], expected["corrected"])
    # The interval of the corrected share is wider: it carries the reference's counts too.
    corrected, naive = gender["corrected"], gender["naive"]
    assert corrected["high"] - corrected["low"] > naive["high"] - naive["low"]
    age = shares["age"]
    assert age["watchers"] == expected["n"] and list(age["bands"]) == list(AGE_BAND_NAMES)
    for name in AGE_BAND_NAMES:
        _close(age["bands"][name], expected["bands"][name])

    report = hub.get(f"/v1/reports/daily?date={now.date().isoformat()}&device_id=dev-shares")
    assert report["shares"]["gender"] == gender
    assert report["shares"]["age"] == age

    # A range longer than HUB_SHARES_MAX_DAYS (31): refused, saying why and what to ask.
    long = (now - timedelta(days=40)).isoformat().replace("+00:00", "Z")
    status, body = hub.request(f"/v1/stats?start={long}&end={end}&shares=true")
    assert status == 422 and "HUB_SHARES_MAX_DAYS" in str(body), body
    assert hub.request(f"/v1/stats?start={long}&end={end}")[0] == 200  # without: as before

    # No watcher with P(female) in range: no shares, rather than a share of nobody.
    empty = f"/v1/stats?start={start}&end={end}&device_id=dev-none&shares=true"
    assert hub.get(empty)["shares"] == {"level": 0.9, "gender": None, "age": None}
