"""``/v1/stats``: people counted per bucket and in total, by dimension and group."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from cloud_hub.api.auth import RequireRead
from cloud_hub.api.deps import Pool, Settings
from cloud_hub.api.params import Dimensions, StatsGroups, StatsWindow
from cloud_hub.api.responses import READ, TOO_BIG, json_answer
from cloud_hub.queries.shares import population_shares
from cloud_hub.queries.stats_answer import stats
from cloud_hub.schemas import StatsResponse

router = APIRouter(dependencies=[RequireRead], responses=READ)


@router.get("/v1/stats", response_model=StatsResponse, responses=TOO_BIG, tags=["stats"])
async def get_stats(
    pool: Pool,
    settings: Settings,
    window: StatsWindow,
    where: Dimensions,
    group_by: StatsGroups,
    shares: Annotated[
        bool,
        Query(
            description="Also answer the range's population shares (one more scan of the "
            "range's events, so off by default)."
        ),
    ] = False,
) -> Response:
    """People counted per bucket (minute to month) and in total: passers-by (everyone in
    view) and watchers (those who faced the camera), watcher rate, mean attention and
    dwell, the watchers by gender and age band, directions, first visits against
    returns. Range ``[start, end)`` by each event's ``last_seen``, default the last 24
    hours; empty buckets are included with zeros. With ``shares=true``, also the range's
    gender and age shares of the watchers, naive and corrected for the models' known
    errors, with 90% intervals."""
    start, end = window.range()
    if shares and end - start > timedelta(days=settings.shares_max_days):
        raise HTTPException(
            422,
            f"shares=true answers ranges of at most {settings.shares_max_days} days "
            "(HUB_SHARES_MAX_DAYS; it reads every event in the range): ask for a shorter "
            "range, or use /v1/reports/daily, which carries each day's shares",
        )
    try:
        totals, buckets = await stats(
            pool,
            start,
            end,
            window.bucket,
            where=where,
            group_by=group_by,
            max_pairs=settings.stats_max_pairs,
        )
        population = await population_shares(pool, start, end, where) if shares else None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    answer = StatsResponse(
        start=start,
        end=end,
        bucket=window.bucket,
        **asdict(where),
        group_by=group_by,
        totals=totals,
        buckets=buckets,
        shares=population,
    )
    return await json_answer(answer)
