"""Population shares of the watchers in a range: naive, and corrected for the models'
known errors, each with a 90% interval (``/v1/stats`` and the daily report).

Gender: from each watcher's calibrated P(female) (``p_female``, agents 0.3 on). The
naive share is their mean (``pcc``), its interval the sample's alone. The corrected
share is EM's (Saerens, Latinne and Decaestecker 2002): the posteriors are calibrated
for the reference set's prior (fairface_dev's 50/50, ``edge_agent.shares_reference``),
and EM finds the prior of this population under which they would be; its interval
takes both the population's size and the reference's confusion counts (``pacc``'s
delta-method half-widths, ``edge_agent.shares.recentred``). On populations of sets the
correction never saw, EM cut the naive error by 10-33% (``bench/population_shares.py``,
docs/models.md).

Age: the mean of the watchers' band probabilities (``age_bands``), with the sample's
interval. No correction is applied: every correction measured made the age
distribution worse on the sets it was not fitted on (docs/models.md).

Identical posteriors are grouped in SQL (P(female) rounded to 3 decimals: at most 1,001
groups), so a request costs one scan of the range's events and a few milliseconds of
arithmetic however many people it holds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from cloud_hub.queries.events import EventFilter
from cloud_hub.queries.filters import Filters, StatsFilter
from cloud_hub.schemas import AgeShares, GenderShares, PopulationShares, ShareInterval
from edge_agent.contract import AGE_BAND_NAMES
from edge_agent.shares import LEVEL, Correction, em_priors, from_observed, recentred
from edge_agent.shares_reference import GENDER_REFERENCE


@dataclass(frozen=True, slots=True)
class ShareInputs:
    """What the range's watchers say: P(female) values with how many had each, and
    the summed age band probabilities with how many watchers carried them."""

    p_female: list[tuple[float, int]]
    band_sums: list[float]
    band_n: int


def _where(start: datetime, end: datetime, filters: StatsFilter, column: str) -> Filters:
    where = Filters()
    EventFilter(
        filters.device_id,
        filters.camera_id,
        filters.site,
        filters.gender,
        filters.age_band,
        filters.direction,
        start=start,
        end=end,
    ).apply(where)
    where.clauses.append(f"watcher AND {column} IS NOT NULL")
    return where


async def share_inputs(
    pool: asyncpg.Pool, start: datetime, end: datetime, filters: StatsFilter
) -> ShareInputs:
    """The two aggregates the shares need, read from the range's events."""
    gender = _where(start, end, filters, "p_female")
    age = _where(start, end, filters, "age_bands")
    sums = ", ".join(f"sum(age_bands[{i + 1}])" for i in range(len(AGE_BAND_NAMES)))
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            f"""SELECT round(p_female::numeric, 3)::float8 AS p, count(*) AS n
                FROM person_events {gender.where()} GROUP BY 1""",
            *gender.args,
        )
        bands = await conn.fetchrow(
            f"SELECT count(*) AS n, {sums} FROM person_events {age.where()}", *age.args
        )
    assert bands is not None
    n = int(bands["n"])
    return ShareInputs(
        [(float(r["p"]), int(r["n"])) for r in rows],
        [float(bands[i + 1] or 0.0) for i in range(len(AGE_BAND_NAMES))],
        n,
    )


def _interval(share: float, low: float, high: float) -> ShareInterval:
    return ShareInterval(share=round(share, 4), low=round(low, 4), high=round(high, 4))


def gender_shares(
    p_female: list[tuple[float, int]], reference: Correction = GENDER_REFERENCE
) -> GenderShares | None:
    """Naive and EM-corrected female share of the watchers, or None without any."""
    n = sum(count for _, count in p_female)
    if n == 0:
        return None
    posteriors = [(p, 1.0 - p) for p, _ in p_female]
    weights = [float(count) for _, count in p_female]
    mean = sum(p * count for p, count in p_female) / n
    naive = from_observed([mean, 1.0 - mean], n, None, "pcc")
    point, _ = em_priors(posteriors, reference.reference_prior, weights=weights)
    band = recentred(point, from_observed([mean, 1.0 - mean], n, reference, "pacc"))
    return GenderShares(
        watchers=n,
        naive=_interval(naive.estimate[0], naive.low[0], naive.high[0]),
        corrected=_interval(band.estimate[0], band.low[0], band.high[0]),
        reference=f"{reference.fitted_on} ({reference.model_set})",
    )


def age_shares(band_sums: list[float], n: int) -> AgeShares | None:
    """Each band's share of the watchers (mean band probability), or None without any."""
    if n == 0:
        return None
    mean = [s / n for s in band_sums]
    total = sum(mean)
    mean = [m / total for m in mean] if total > 0 else mean
    naive = from_observed(mean, n, None, "pcc")
    return AgeShares(
        watchers=n,
        bands={
            name: _interval(naive.estimate[i], naive.low[i], naive.high[i])
            for i, name in enumerate(AGE_BAND_NAMES)
        },
    )


async def population_shares(
    pool: asyncpg.Pool, start: datetime, end: datetime, filters: StatsFilter
) -> PopulationShares:
    """The range's shares (arithmetic in a worker thread: it is pure Python)."""
    inputs = await share_inputs(pool, start, end, filters)

    def compute() -> PopulationShares:
        return PopulationShares(
            level=LEVEL,
            gender=gender_shares(inputs.p_female),
            age=age_shares(inputs.band_sums, inputs.band_n),
        )

    return await asyncio.to_thread(compute)
