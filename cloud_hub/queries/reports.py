"""The daily report: one UTC day per camera, and each of its hours."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg

from cloud_hub.queries.buckets import check_range
from cloud_hub.queries.cameras import cameras
from cloud_hub.queries.filters import StatsFilter
from cloud_hub.queries.stats_answer import Tally, stats_cells
from cloud_hub.queries.stats_plan import MAX_GROUPS, _too_large, fleet_size
from cloud_hub.queries.stats_sql import _CELL_KEYS
from cloud_hub.schemas import Camera, CameraDay, Counts, HourCounts


def day_range(day: date) -> tuple[datetime, datetime]:
    """The UTC day as ``[start, end)``."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


async def daily_stats(
    pool: asyncpg.Pool,
    day: date,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
    *,
    max_pairs: int = MAX_GROUPS,
) -> list[CameraDay]:
    """Per camera, one UTC day: passers-by and watchers, attention and dwell, the
    watchers' gender and age bands, first visits and returns, average age, and the same
    for each of its 24 hours. Registered cameras
    that saw nobody are included with zeros.

    Each camera is 25 sets of counts: a fleet too large for one report (cameras x 25
    over ``max_pairs``, counted before anything is aggregated) is refused, :class:`TooLargeError`,
    asking for a site or device filter."""
    start, end = day_range(day)
    check_range(start, end)
    fleet = await fleet_size(pool, device_id, camera_id, site)
    if fleet.cameras * 25 > max_pairs:
        raise _too_large(
            "the report",
            fleet.cameras * 25,
            max_pairs,
            f"{fleet.cameras:,} cameras x 24 hours and a total",
            "filter by site, device_id or camera_id",
        )
    filters = StatsFilter(device_id, camera_id, site)
    cells = await stats_cells(pool, start, end, "hour", filters, ["camera"], max_pairs)
    registered = {
        (c.device_id, c.camera_id): c
        for c in await cameras(pool, site=site, device_id=device_id, camera_id=camera_id)
    }
    return await asyncio.to_thread(_daily_answer, start, cells, registered)


def _daily_answer(
    start: datetime, cells: list[asyncpg.Record], registered: dict[tuple[str, str], Camera]
) -> list[CameraDay]:
    """The report from the cells (in a worker thread, as :func:`_stats_answer`)."""
    hours = [start + timedelta(hours=h) for h in range(24)]
    tallies: dict[tuple[str, str], tuple[Tally, dict[datetime, Tally]]] = {
        key: (Tally(), {}) for key in registered
    }
    for cell in cells:  # one per camera and hour
        total, by_hour = tallies.setdefault((cell["device_id"], cell["camera_id"]), (Tally(), {}))
        measures = tuple(cell)[_CELL_KEYS:]
        total.add(measures)
        by_hour[cell["bucket"]] = Tally(list(measures))
    report = []
    for key in sorted(tallies):
        total, by_hour = tallies[key]
        camera = registered.get(key)
        report.append(
            CameraDay(
                device_id=key[0],
                camera_id=key[1],
                name=camera.name if camera else None,
                site=camera.site if camera else None,
                location=camera.location if camera else None,
                totals=Counts(**total.fields()),
                hours=[
                    HourCounts(hour=i, start=h, **by_hour.get(h, Tally()).fields())
                    for i, h in enumerate(hours)
                ],
            )
        )
    return report
