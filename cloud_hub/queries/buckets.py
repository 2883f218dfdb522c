"""Time buckets (minute to month, UTC) and the times the API serves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

MAX_BUCKETS = 10_000

StatsBucketSize = Literal["minute", "hour", "day", "week", "month"]

_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
# Times the API accepts: later ones could not be stepped through without overflowing.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _truncate(moment: datetime, bucket: StatsBucketSize) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if bucket == "minute":
        return moment
    moment = moment.replace(minute=0)
    if bucket == "hour":
        return moment
    moment = moment.replace(hour=0)
    if bucket == "week":  # ISO weeks start on Monday, as PostgreSQL's date_trunc('week')
        return moment - timedelta(days=moment.weekday())
    return moment.replace(day=1) if bucket == "month" else moment


def _next(moment: datetime, bucket: StatsBucketSize) -> datetime:
    if bucket == "month":
        year, month = (
            (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        )
        return moment.replace(year=year, month=month)
    if bucket == "week":
        return moment + timedelta(days=7)
    return moment + _STEP[bucket]


def _ceil(moment: datetime, bucket: StatsBucketSize) -> datetime:
    floor = _truncate(moment, bucket)
    return floor if floor == moment else _next(floor, bucket)


def _count(first: datetime, end: datetime, bucket: StatsBucketSize) -> int:
    if bucket == "month":
        months = (end.year - first.year) * 12 + end.month - first.month
        return months + (1 if end > first.replace(year=end.year, month=end.month) else 0)
    step = timedelta(days=7) if bucket == "week" else _STEP[bucket]
    return max(0, -(-(end - first) // step))


def bucket_starts(start: datetime, end: datetime, bucket: StatsBucketSize) -> list[datetime]:
    """Every bucket overlapping ``[start, end)``, so empty ones show as zeros."""
    first = _truncate(start, bucket)
    count = _count(first, end.astimezone(UTC), bucket)
    if count > MAX_BUCKETS:
        raise ValueError(f"{count} {bucket} buckets exceed {MAX_BUCKETS}; narrow the range")
    starts = []
    moment = first
    while moment < end:
        starts.append(moment)
        moment = _next(moment, bucket)
    return starts


def check_range(start: datetime, end: datetime) -> None:
    """``ValueError`` unless ``start < end`` and both lie in the years the API serves."""
    if start >= end:
        raise ValueError("start must be before end")
    if start < EARLIEST or end > LATEST:
        raise ValueError(f"times must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
