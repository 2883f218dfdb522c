"""Statistics answers: the statement's rows (:func:`stats_rows`), and the API's buckets and
totals (:func:`stats`), each bucket and group summed from its cells (:class:`Tally`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg

from cloud_hub.queries.buckets import StatsBucketSize, bucket_starts
from cloud_hub.queries.filters import StatsFilter
from cloud_hub.queries.stats_plan import (
    MAX_GROUPS,
    TooLargeError,
    _plan,
    check_stats_size,
    fleet_size,
)
from cloud_hub.queries.stats_sql import _CELL_KEYS, _GROUP_FIELDS, _SUMS_WIDTH, MAX_ROWS, _Statement
from cloud_hub.schemas import (
    AGE_BANDS,
    DIRECTIONS,
    GENDERS,
    StatsBucket,
    StatsGroup,
    StatsTotals,
)

GroupKey = Literal["site", "device", "camera", "gender", "age_band", "direction"]


@dataclass(slots=True)
class StatsRow:
    """One bucket's people of one gender, age band and direction (and, when grouped,
    device, camera and site), with the sums behind averages: ``events`` are passers-by,
    ``visitors`` first visits (``returns = events - visitors``), ``watchers`` those who
    faced the camera; ages and attention are watchers' (attention where known)."""

    bucket: datetime
    gender: str
    age_band: str
    direction: str
    events: int
    visitors: int
    age_sum: float
    age_n: int
    dwell_sum: float
    watchers: int
    attention_sum: float
    attention_n: int
    device_id: str | None  # null unless per camera (or per site)
    camera_id: str | None
    site: str | None  # null unless per site


async def stats_rows(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
    *,
    gender: str | None = None,
    age_band: str | None = None,
    direction: str | None = None,
    per_camera: bool = False,
    per_site: bool = False,
    direct: bool = True,
) -> list[StatsRow]:
    """Every measure per bucket, gender, age band and direction over ``[start, end)``, by
    each event's ``last_seen``: one statement over the spans :func:`plan_spans` picks.
    ``per_camera`` adds device and camera, ``per_site`` the camera's registered site.
    ``direct=False`` reads the plain backend's views instead (for comparing plans)."""
    filters = StatsFilter(device_id, camera_id, site, gender, age_band, direction)
    statement = _Statement(bucket, filters, per_camera or per_site)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        await _plan(conn, statement, start, end, direct)
        rows = await conn.fetch(statement.sql(per_site), *statement.args)
    if len(rows) > MAX_ROWS:
        raise ValueError("the answer would be too large; narrow the range or the grouping")
    return [StatsRow(**dict(row)) for row in rows]  # the statement's columns, by name


@dataclass(slots=True)
class Tally:
    """Sums behind a :class:`Counts` (averages are sums over counts), as one flat list in
    a cell's order: adding a cell is one pass over 23 numbers (an answer may have tens of
    thousands of cells)."""

    sums: list[Any] = field(default_factory=lambda: [0] * _SUMS_WIDTH)

    def add(self, measures: Sequence[Any]) -> None:
        """Add one cell's measures (or another tally's ``sums``)."""
        self.sums = [a + b for a, b in zip(self.sums, measures, strict=True)]

    def fields(self) -> dict[str, Any]:
        """The :class:`Counts` fields (averages rounded to 2 decimals)."""
        events, visitors, age_sum, age_n, dwell_sum, watchers, attention_sum, attention_n = (
            self.sums[:8]
        )
        mean_dwell = round(dwell_sum / events, 2) if events else None
        out: dict[str, Any] = {
            "total": events,
            "passers_by": events,
            "watchers": watchers,
            "watcher_rate": round(watchers / events, 4) if events else None,
            "mean_attention_s": round(attention_sum / attention_n, 2) if attention_n else None,
            "mean_dwell_s": mean_dwell,
            "visitors": visitors,
            "returns": events - visitors,
            "avg_age": round(age_sum / age_n, 2) if age_n else None,
            "avg_dwell_s": mean_dwell,
        }
        at = 8
        for name, values in (
            ("gender", GENDERS),
            ("age", AGE_BANDS),
            ("direction", DIRECTIONS),
        ):
            out[name] = dict(zip(values, self.sums[at : at + len(values)], strict=True))
            at += len(values)
        return out


def group_key(
    cell: Mapping[str, Any], group_by: Sequence[str]
) -> tuple[tuple[str, str | None], ...]:
    """The cell's group as (name, value) pairs, in ``group_by`` order."""
    pairs: dict[str, str | None] = {}
    for name in group_by:
        for column in _GROUP_FIELDS[name]:
            pairs[column] = cell[column]
    return tuple(pairs.items())


def _sort_key(key: tuple[tuple[str, str | None], ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, value or "") for _, value in key)


async def stats_cells(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    filters: StatsFilter,
    group_by: Sequence[str],
    limit: int,
) -> list[asyncpg.Record]:
    """Per bucket and group of ``group_by``, the measures (:meth:`_Statement.cells_sql`);
    :class:`TooLargeError` when there are more than ``limit`` cells, having read one more."""
    columns = [column for name in group_by for column in _GROUP_FIELDS[name]]
    per_camera = bool({"site", "device", "camera"} & set(group_by))
    statement = _Statement(bucket, filters, per_camera)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        await _plan(conn, statement, start, end)
        rows: list[asyncpg.Record] = await conn.fetch(
            statement.cells_sql(columns, limit), *statement.args
        )
    if len(rows) > limit:
        raise TooLargeError(
            f"the answer holds more than {limit:,} bucket x group pairs "
            "(HUB_STATS_MAX_PAIRS); shorten the range, use a larger bucket, group by fewer "
            "dimensions, or filter"
        )
    return rows


async def stats(
    pool: asyncpg.Pool,
    start: datetime,
    end: datetime,
    bucket: StatsBucketSize,
    device_id: str | None = None,
    camera_id: str | None = None,
    site: str | None = None,
    *,
    gender: str | None = None,
    age_band: str | None = None,
    direction: str | None = None,
    group_by: Sequence[GroupKey] = (),
    max_pairs: int = MAX_GROUPS,
    where: StatsFilter | None = None,
) -> tuple[StatsTotals, list[StatsBucket]]:
    """People per bucket, plus the totals of the range; with ``group_by`` each of them
    also per group (site, device, camera, gender, age band, direction). ``where``, when
    given, stands for the filters (device_id to direction) one by one.

    The answer's size is estimated first (buckets x groups, :func:`check_stats_size`)
    and refused over ``max_pairs`` before anything is aggregated; the statement then
    returns one row per cell of the answer, at most ``max_pairs + 1``."""
    starts = bucket_starts(start, end, bucket)
    group_by = list(dict.fromkeys(group_by))
    filters = where or StatsFilter(device_id, camera_id, site, gender, age_band, direction)
    fleet = None
    if {"site", "device", "camera"} & set(group_by):
        fleet = await fleet_size(pool, filters.device_id, filters.camera_id, filters.site)
    check_stats_size(len(starts), bucket, group_by, filters, fleet, max_pairs)
    cells = await stats_cells(pool, start, end, bucket, filters, group_by, max_pairs)
    # Summing and building up to max_pairs groups is CPU work of a second or more at the
    # limit: in a worker thread the event loop (ingest, other requests) keeps its turns.
    return await asyncio.to_thread(_stats_answer, starts, cells, group_by)


def _stats_answer(
    starts: Sequence[datetime], cells: list[asyncpg.Record], group_by: Sequence[str]
) -> tuple[StatsTotals, list[StatsBucket]]:
    """The buckets and totals from the cells (which it empties, to free them early)."""
    tallies = {s: Tally() for s in starts}
    grouped: dict[datetime, dict[Any, Tally]] = {s: {} for s in starts}
    total_groups: dict[Any, Tally] = {}
    for cell in cells:
        values = tuple(cell)
        measures = values[_CELL_KEYS:]
        tallies[values[0]].add(measures)
        if group_by:  # one cell per bucket and group
            key = group_key(cell, group_by)
            grouped[values[0]][key] = Tally(list(measures))
            total_groups.setdefault(key, Tally()).add(measures)
    cells.clear()
    total = Tally()
    for tally in tallies.values():
        total.add(tally.sums)

    def groups(by_key: dict[Any, Tally]) -> list[StatsGroup] | None:
        if not group_by:
            return None
        return [
            StatsGroup(key=dict(key), **by_key[key].fields())
            for key in sorted(by_key, key=_sort_key)
        ]

    buckets = [
        StatsBucket(start=s, groups=groups(grouped[s]), **tallies[s].fields()) for s in starts
    ]
    return StatsTotals(groups=groups(total_groups), **total.fields()), buckets
