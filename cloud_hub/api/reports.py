"""Reports over the cameras: ``/v1/reports/daily`` (one UTC day per camera) and
occupancy (``/v1/occupancy`` over time, ``/v1/occupancy/current`` now)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from cloud_hub.api.auth import RequireRead
from cloud_hub.api.deps import Cache, Pool, Settings
from cloud_hub.api.params import CameraScope, OccupancyGroups, OccupancyWindow, ReportDay
from cloud_hub.api.responses import READ, TOO_BIG, json_answer
from cloud_hub.queries.occupancy import current_occupancy_db, occupancy, with_camera_names
from cloud_hub.queries.reports import daily_stats, day_range
from cloud_hub.queries.shares import population_shares
from cloud_hub.schemas import CurrentOccupancyResponse, DailyReport, OccupancyResponse

router = APIRouter(dependencies=[RequireRead], responses=READ)


@router.get("/v1/reports/daily", response_model=DailyReport, responses=TOO_BIG, tags=["stats"])
async def get_daily_report(
    pool: Pool,
    settings: Settings,
    day: ReportDay,
    where: CameraScope,
) -> Response:
    """One UTC day per camera: passers-by and watchers, watcher rate, mean attention and
    dwell, the watchers by gender and age band, first visits and returns, average age,
    and the same for each hour; ``shares``: the day's gender and age shares of the
    watchers over those cameras, naive and corrected for the models' known errors."""
    try:
        start, end = day_range(day)
        cameras = await daily_stats(
            pool,
            day,
            where.device_id,
            where.camera_id,
            where.site,
            max_pairs=settings.stats_max_pairs,
        )
        shares = await population_shares(pool, start, end, where)
    except (ValueError, OverflowError) as exc:
        raise HTTPException(422, str(exc) or "date out of range") from exc
    return await json_answer(
        DailyReport(date=day.isoformat(), start=start, end=end, cameras=cameras, shares=shares)
    )


@router.get(
    "/v1/occupancy", response_model=OccupancyResponse, responses=TOO_BIG, tags=["occupancy"]
)
async def get_occupancy(
    pool: Pool,
    settings: Settings,
    window: OccupancyWindow,
    where: CameraScope,
    group_by: OccupancyGroups,
) -> OccupancyResponse:
    """People in view over time, from the devices' occupancy messages (a minute's
    resolution): per bucket the average and the peak; per site, device or camera with
    ``group_by``. Buckets without samples are left out."""
    start, end = window.range()
    try:
        buckets = await occupancy(
            pool, start, end, window.bucket, where, group_by, max_pairs=settings.stats_max_pairs
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return OccupancyResponse(
        start=start,
        end=end,
        bucket=window.bucket,
        device_id=where.device_id,
        camera_id=where.camera_id,
        site=where.site,
        group_by=group_by,
        buckets=buckets,
    )


@router.get("/v1/occupancy/current", response_model=CurrentOccupancyResponse, tags=["occupancy"])
async def get_current_occupancy(
    pool: Pool, cache: Cache, where: CameraScope
) -> CurrentOccupancyResponse:
    """Each camera's latest occupancy sample (from Redis; from the database when the
    live cache is off) and their sum. Check ``at``: a camera that stopped reporting
    keeps its last sample."""
    samples = await cache.occupancy()
    source = "redis"
    if samples is None:
        samples, source = await current_occupancy_db(pool), "database"
    cameras = await with_camera_names(pool, samples, where)
    return CurrentOccupancyResponse(
        source=source, total=sum(c.people for c in cameras), cameras=cameras
    )
