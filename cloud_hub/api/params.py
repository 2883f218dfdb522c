"""Query parameters the routers share: their types, with the descriptions ``/docs`` shows,
the filters that repeat across routes as dependencies that hand a route the query
layer's filter objects, and the time range checks every endpoint makes.

A filter here takes either parameters only or other filters only, never both: FastAPI
lists a dependency's own parameters before those of the dependencies it takes, and
reports their errors after them, so mixing the two would reorder a route's parameters
in ``/docs`` and the errors of a 422. A check that answers 422 by itself (a range whose
start is not before its end) runs only once every parameter is valid: in the route
(:func:`time_range`) or in a filter built of other filters (:func:`event_filter`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query

from cloud_hub.live.cache import LIVE_KINDS, LiveKind
from cloud_hub.queries.buckets import EARLIEST, LATEST, check_range
from cloud_hub.queries.events import EventFilter
from cloud_hub.queries.filters import StatsFilter
from cloud_hub.schemas import (
    AgeBand,
    Bucket,
    DirectionValue,
    GenderValue,
    GroupBy,
    OccupancyGroupBy,
)
from edge_agent.contract import IdString

OptionalId = Annotated[IdString | None, Query()]
Site = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Only cameras registered at this site (see /v1/cameras).",
    ),
]
Start = Annotated[
    datetime | None,
    Query(description="Inclusive, ISO 8601; without a zone UTC. Default: end minus 24 hours."),
]
End = Annotated[datetime | None, Query(description="Exclusive, ISO 8601. Default: now.")]
GenderQ = Annotated[GenderValue | None, Query(description="Only this gender.")]
AgeBandQ = Annotated[AgeBand | None, Query(description="Only this age band.")]
DirectionQ = Annotated[
    DirectionValue | None, Query(description="Only this direction (none: no line crossed).")
]
Limit = Annotated[int, Query(ge=1, le=1000)]


# --- time ranges ------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def checked_range(start: datetime, end: datetime) -> None:
    """The one check of a time range every endpoint makes (``queries.check_range``:
    start before end, both in the years served); 422 otherwise."""
    try:
        check_range(start, end)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


def time_range(
    start: datetime | None, end: datetime | None, default: timedelta = timedelta(hours=24)
) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC from the query, defaults filled; 422 when unusable."""
    try:
        end_ = _utc(end) if end is not None else datetime.now(UTC)
        if not EARLIEST < end_ <= LATEST:
            raise ValueError
        start_ = _utc(start) if start is not None else end_ - default
    except (ValueError, OverflowError) as exc:
        detail = f"times must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}"
        raise HTTPException(422, detail) from exc
    checked_range(start_, end_)
    return start_, end_


def _bound(value: datetime | None) -> datetime | None:
    """A filter time in UTC, clamped to the years the API serves."""
    if value is None:
        return None
    try:
        value = _utc(value)
    except OverflowError:  # a zone offset past datetime's first or last day
        return EARLIEST if value.year < 5000 else LATEST
    return min(max(value, EARLIEST), LATEST)


@dataclass(frozen=True, slots=True)
class Window:
    """A range and bucket as asked: either end may be left out (:meth:`range`)."""

    start: datetime | None
    end: datetime | None
    bucket: Bucket

    def range(self) -> tuple[datetime, datetime]:
        """``[start, end)`` with the defaults (the last 24 hours); 422 when unusable."""
        return time_range(self.start, self.end)


async def stats_window(
    start: Start = None,
    end: End = None,
    bucket: Annotated[Bucket, Query(description="UTC buckets; weeks start on Monday.")] = "hour",
) -> Window:
    """The statistics' range and bucket."""
    return Window(start, end, bucket)


async def occupancy_window(start: Start = None, end: End = None, bucket: Bucket = "hour") -> Window:
    """Occupancy's range and bucket."""
    return Window(start, end, bucket)


async def report_day(
    day: Annotated[
        date | None, Query(alias="date", description="A UTC day; default today.")
    ] = None,
) -> date:
    """The daily report's UTC day."""
    return day or datetime.now(UTC).date()


# --- which cameras and events -----------------------------------------------------------------


async def camera_scope(
    device_id: OptionalId = None, camera_id: OptionalId = None, site: Site = None
) -> StatsFilter:
    """Which cameras: by device, camera and registered site (no dimensions)."""
    return StatsFilter(device_id, camera_id, site)


async def dimensions(
    device_id: OptionalId = None,
    camera_id: OptionalId = None,
    site: Site = None,
    gender: GenderQ = None,
    age_band: AgeBandQ = None,
    direction: DirectionQ = None,
) -> StatsFilter:
    """Which events count: the cameras, and a gender, age band and direction."""
    return StatsFilter(device_id, camera_id, site, gender, age_band, direction)


async def stats_groups(
    group_by: Annotated[
        list[GroupBy] | None,
        Query(
            description="Repeat for several: each bucket and the totals get `groups`, "
            "one per combination (camera: device_id and camera_id)."
        ),
    ] = None,
) -> list[GroupBy]:
    """The statistics' groups, each named once, in the order asked."""
    return list(dict.fromkeys(group_by or []))


async def occupancy_groups(
    group_by: Annotated[list[OccupancyGroupBy] | None, Query()] = None,
) -> list[OccupancyGroupBy]:
    """Occupancy's groups, each named once, in the order asked."""
    return list(dict.fromkeys(group_by or []))


StatsWindow = Annotated[Window, Depends(stats_window)]
OccupancyWindow = Annotated[Window, Depends(occupancy_window)]
ReportDay = Annotated[date, Depends(report_day)]
CameraScope = Annotated[StatsFilter, Depends(camera_scope)]
Dimensions = Annotated[StatsFilter, Depends(dimensions)]
StatsGroups = Annotated[list[GroupBy], Depends(stats_groups)]
OccupancyGroups = Annotated[list[OccupancyGroupBy], Depends(occupancy_groups)]


async def event_times(
    start: Annotated[datetime | None, Query(description="Inclusive (last_seen).")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive (last_seen).")] = None,
) -> tuple[datetime | None, datetime | None]:
    """The events' ``last_seen`` range, either end open, clamped to the years served."""
    return _bound(start), _bound(end)


async def returning_filter(
    returning: Annotated[
        bool | None, Query(description="true: only returns; false: only first visits.")
    ] = None,
) -> bool | None:
    """Only returns, only first visits, or both."""
    return returning


async def event_filter(
    times: Annotated[tuple[datetime | None, datetime | None], Depends(event_times)],
    where: Dimensions,
    returning: Annotated[bool | None, Depends(returning_filter)],
) -> EventFilter:
    """The filters /v1/events and /v1/export/events share. Either end may be left open;
    with both, the range is checked as every endpoint checks it (start before end)."""
    start, end = times
    if start is not None and end is not None:
        checked_range(start, end)
    return EventFilter(**asdict(where), start=start, end=end, returning=returning)


EventQ = Annotated[EventFilter, Depends(event_filter)]


# --- the live stream --------------------------------------------------------------------------


async def live_kinds(
    types: Annotated[
        list[LiveKind] | None,
        Query(description="What to stream (repeat for several); default: event."),
    ] = None,
) -> frozenset[LiveKind]:
    """What the live stream sends."""
    return frozenset(types or ("event",)) & frozenset(LIVE_KINDS)


async def resume_after(
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=64,
            description="Sent by EventSource on reconnect: the stream resumes after it.",
        ),
    ] = None,
    after: Annotated[
        str | None,
        Query(max_length=64, description="As Last-Event-ID, for clients that cannot set it."),
    ] = None,
) -> str | None:
    """Where a reconnecting live stream resumes (checked by the route, after the cache)."""
    return last_event_id or after


LiveKinds = Annotated[frozenset[LiveKind], Depends(live_kinds)]
ResumeAfter = Annotated[str | None, Depends(resume_after)]
