"""The read path behind the API: statistics, event pages and exports, devices, cameras,
occupancy and the daily report, one module each; the camera writes are
``cloud_hub.storage.cameras``.

Statistics (:func:`stats_rows`) read, for each part of the range, the source that holds
it exactly (:func:`plan_spans`): daily rollups for whole UTC days, hourly rollups for
whole hours, raw events for partial hours and minutes. On TimescaleDB the rollups are
the continuous aggregates. On plain PostgreSQL the query reads the watermarks first, in
the same snapshot, and then the rollup tables below them and ``person_events`` above
them with those times as bounds, rather than the ``stats_hourly``/``stats_daily`` views:
inside the views the bound is a sub-select, which the planner cannot see, so it guessed a
third of all events above the watermark and scanned whole partitions (docs/hub.md).
Statements without a device, camera or site filter or per-camera grouping read the
fleet-wide rollup tables there (``stats_*_fleet_rollup``, summed over cameras by
triggers), which hold hundreds of times fewer rows than the per-camera ones at fleet
scale (docs/hub.md, "Query performance").

Modules: ``buckets`` (time buckets and ranges), ``stats_plan`` (which source answers
which span, and what an answer would cost), ``stats_sql`` (the statement),
``stats_answer`` (its rows, and the API's buckets and totals), ``events`` (pages,
cursors, export batches), ``devices``, ``cameras``, ``occupancy`` and ``reports`` (the
daily report). The statistics names below are re-exported for those that read
``queries.<name>`` (tests, benchmarks, docs/hub.md); ``_truncate`` and ``_Statement``
are internals the storage tests and bench/hub_query.py reach. Everything else is
imported from its module: a function named as its module (``cameras``, ``devices``,
``occupancy``) re-exported here would hide the module.
"""

from cloud_hub.queries.buckets import (
    EARLIEST,
    LATEST,
    StatsBucketSize,
    _truncate,
    bucket_starts,
    check_range,
)
from cloud_hub.queries.filters import StatsFilter
from cloud_hub.queries.reports import daily_stats, day_range
from cloud_hub.queries.stats_answer import GroupKey, StatsRow, stats, stats_rows
from cloud_hub.queries.stats_plan import (
    MAX_GROUPS,
    FleetSize,
    Span,
    TooLargeError,
    check_stats_size,
    fleet_size,
    plan_spans,
)
from cloud_hub.queries.stats_sql import _Statement

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_GROUPS",
    "FleetSize",
    "GroupKey",
    "Span",
    "StatsBucketSize",
    "StatsFilter",
    "StatsRow",
    "TooLargeError",
    "_Statement",
    "_truncate",
    "bucket_starts",
    "check_range",
    "check_stats_size",
    "daily_stats",
    "day_range",
    "fleet_size",
    "plan_spans",
    "stats",
    "stats_rows",
]
