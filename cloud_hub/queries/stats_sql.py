"""The statistics statement: one ``UNION ALL`` of the sources a plan picks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cloud_hub.queries.buckets import StatsBucketSize
from cloud_hub.queries.filters import StatsFilter
from cloud_hub.schemas import AGE_BANDS, DIRECTIONS, GENDERS

MAX_ROWS = 1_000_000  # rows one stats_rows statement may return (tests, benchmarks)

# The dimensions every statistics row has, and their values (schemas: the API's enums).
_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "gender": GENDERS,
    "age_band": AGE_BANDS,
    "direction": DIRECTIONS,
}

# What a statistics row measures, from raw events (as the rollups do, migration 010) or
# summed from rollup rows: passers-by (events), first visits, watchers' ages, everyone's
# dwell, watchers, and watchers' known attention.
_MEASURES = """count(*) AS events, count(*) FILTER (WHERE e.return_of IS NULL) AS visitors,
       sum(e.age::double precision) FILTER (WHERE e.watcher) AS age_sum,
       count(e.age) FILTER (WHERE e.watcher) AS age_n,
       sum(e.dwell_s::double precision) AS dwell_sum,
       count(*) FILTER (WHERE e.watcher) AS watchers,
       sum(e.attention_s::double precision) FILTER (WHERE e.watcher) AS attention_sum,
       count(e.attention_s) FILTER (WHERE e.watcher) AS attention_n"""
_SUMS = """sum(r.events) AS events, sum(r.visitors) AS visitors, sum(r.age_sum) AS age_sum,
       sum(r.age_n) AS age_n, sum(r.dwell_sum) AS dwell_sum, sum(r.watchers) AS watchers,
       sum(r.attention_sum) AS attention_sum, sum(r.attention_n) AS attention_n"""
# The sums of a row or cell, as the outer statement names them.
_TOTALS = """sum(s.events)::bigint AS events, sum(s.visitors)::bigint AS visitors,
       coalesce(sum(s.age_sum), 0) AS age_sum, sum(s.age_n)::bigint AS age_n,
       coalesce(sum(s.dwell_sum), 0) AS dwell_sum, sum(s.watchers)::bigint AS watchers,
       coalesce(sum(s.attention_sum), 0) AS attention_sum,
       sum(s.attention_n)::bigint AS attention_n"""
# Which measure each dimension's marginals count: gender and age describe watchers (people
# whose face was seen); directions are everyone's crossings.
_MARGINAL_OF = {"gender": "watchers", "age_band": "watchers", "direction": "events"}


@dataclass(slots=True)
class _Statement:
    """Builds one statistics statement: ``$1`` is the bucket size."""

    bucket: StatsBucketSize
    filters: StatsFilter
    per_camera: bool
    args: list[object] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    _filter_params: dict[str, str] = field(default_factory=dict)
    _pending: dict[str, tuple[list[str], list[datetime]]] = field(default_factory=dict)
    _pending_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Read the fleet-wide rollups (no device or camera dimension) where they answer: the
    # plain backend's tables (migration 007), TimescaleDB's aggregates (012).
    fleet: bool = False

    def __post_init__(self) -> None:
        self.args.append(self.bucket)
        for name in ("device_id", "camera_id", "site", "gender", "age_band", "direction"):
            value = getattr(self.filters, name)
            if value is not None:
                self._filter_params[name] = self.param(value)

    def param(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def _where(self, alias: str, raw: bool) -> str:
        f, a = self._filter_params, alias
        sql = ""
        if "device_id" in f:
            sql += f" AND {a}.device_id = {f['device_id']}"
        if "camera_id" in f:
            sql += f" AND {a}.camera_id = {f['camera_id']}"
        if "site" in f:
            sql += (
                f" AND ({a}.device_id, {a}.camera_id) IN "
                f"(SELECT device_id, camera_id FROM cameras WHERE site = {f['site']})"
            )
        if "gender" in f:
            column = f"coalesce({a}.gender, 'unknown')" if raw else f"{a}.gender"
            sql += f" AND {column} = {f['gender']}"
        if "age_band" in f:
            sql += f" AND {a}.age_band = {f['age_band']}"
        if "direction" in f:
            column = f"coalesce({a}.direction, 'none')" if raw else f"{a}.direction"
            sql += f" AND {column} = {f['direction']}"
        return sql

    def _dims(self, alias: str, raw: bool) -> tuple[str, str]:
        """Select list of the dimensions and the GROUP BY positions."""
        camera = f"{alias}.device_id, {alias}.camera_id, " if self.per_camera else ""
        if raw:
            dims = f"{camera}coalesce({alias}.gender, 'unknown') AS gender, {alias}.age_band, "
            dims += f"coalesce({alias}.direction, 'none') AS direction"
        else:
            dims = f"{camera}{alias}.gender, {alias}.age_band, {alias}.direction"
        count = 6 if self.per_camera else 4
        return dims, ", ".join(str(i) for i in range(1, count + 1))

    def _branch(
        self, raw: bool, rows: str, bound: str, lo: datetime, hi: datetime, extra: str = ""
    ) -> None:
        """One branch: the ``rows`` with ``lo <= bound < hi`` per bucket and dimensions,
        events (``raw``, named ``e``) measured or rollup rows (named ``r``) summed;
        ``extra`` adds conditions."""
        alias, time, measures = ("e", "e.last_seen", _MEASURES) if raw else ("r", "r.bucket", _SUMS)
        dims, group = self._dims(alias, raw)
        lo_, hi_ = self.param(lo), self.param(hi)
        self.branches.append(
            f"""SELECT date_trunc($1, {time}, 'UTC') AS bucket, {dims}, {measures}
FROM {rows}
WHERE {bound} >= {lo_} AND {bound} < {hi_}{self._where(alias, raw)}{extra}
GROUP BY {group}"""
        )

    def raw(self, lo: datetime, hi: datetime) -> None:
        """Events with ``lo <= last_seen < hi``."""
        self._branch(True, "person_events e", "e.last_seen", lo, hi)

    def rollup(self, source: str, lo: datetime, hi: datetime, exclude: str = "") -> None:
        """Rollup rows with ``lo <= bucket < hi``, without those ``exclude`` names."""
        self._branch(False, f"{source} r", "r.bucket", lo, hi, exclude and f"\nAND {exclude}")

    def set_pending(self, hours: Sequence[tuple[str, datetime]], daily_mark: datetime) -> None:
        """Plain: the (device, hour)s below the hourly watermark that late events changed
        and the hub has not re-aggregated yet (``rollup_pending_hours``), read in the same
        snapshot. Their rollup rows are stale, so they are read from raw events, as the
        views do; usually there are none, and the statement has no such branches."""
        days = sorted({(d, h.replace(hour=0)) for d, h in hours if h.replace(hour=0) < daily_mark})
        for name, pairs in (("hours", hours), ("days", days)):
            if pairs:
                self._pending[name] = ([d for d, _ in pairs], [t for _, t in pairs])

    def _pending_rows(self, name: str, as_: str) -> str | None:
        """The pending hours or days as rows ``as_`` (device, time); None when there are
        none. Their parameters are added on first use, as a parameter no branch uses
        would have no type."""
        if name not in self._pending:
            return None
        if name not in self._pending_names:
            devices, times = self._pending[name]
            self._pending_names[name] = (self.param(devices), self.param(times))
        devices_, times_ = self._pending_names[name]
        return f"unnest({devices_}::text[], {times_}::timestamptz[]) AS {as_}"

    def _not_pending(self, days: bool) -> str:
        pending = self._pending_rows("days" if days else "hours", "q(device_id, bucket)")
        if pending is None:
            return ""
        return f"""NOT EXISTS (SELECT 1 FROM {pending}
                  WHERE q.device_id = r.device_id AND q.bucket = r.bucket)"""

    def pending_raw(self, lo: datetime, hi: datetime) -> None:
        """Plain: the pending (device, hour)s in ``[lo, hi)``, from raw events."""
        pending = self._pending_rows("hours", "p(device_id, hour)")
        if pending is not None:
            rows = f"""{pending}
JOIN person_events e ON e.device_id = p.device_id
 AND e.last_seen >= p.hour AND e.last_seen < p.hour + interval '1 hour'"""
            self._branch(True, rows, "p.hour", lo, hi)

    def pending_day_hours(self, lo: datetime, hi: datetime) -> None:
        """Plain: the hourly rollups of the (device, day)s holding pending hours, but for
        those hours (their daily rollup is stale as a whole)."""
        pending = self._pending_rows("days", "p(device_id, day)")
        if pending is not None:
            rows = f"""{pending}
JOIN stats_hourly_rollup r ON r.device_id = p.device_id
 AND r.bucket >= p.day AND r.bucket < p.day + interval '1 day'"""
            not_pending = self._not_pending(days=False)
            self._branch(False, rows, "p.day", lo, hi, f"\n  AND {not_pending}")

    def _fleet_answers(self) -> bool:
        """Plain: whether the fleet-wide rollups answer this statement: no device, camera
        or site filter, no per-camera grouping, and no pending late-event hours (whose
        device's rollup rows must be left out)."""
        return self.fleet and not self.per_camera and not self._pending

    def plain_hourly(self, lo: datetime, hi: datetime, hourly_mark: datetime) -> None:
        """What the plain ``stats_hourly`` view answers for ``[lo, hi)``."""
        below = min(hi, hourly_mark)
        if lo < below and self._fleet_answers():
            self.rollup("stats_hourly_fleet_rollup", lo, below)
        elif lo < below:
            self.rollup("stats_hourly_rollup", lo, below, self._not_pending(days=False))
            self.pending_raw(lo, below)
        above = max(lo, hourly_mark)
        if above < hi:
            self.raw(above, hi)

    def plain_daily(
        self, lo: datetime, hi: datetime, hourly_mark: datetime, daily_mark: datetime
    ) -> None:
        """What the plain ``stats_daily`` view answers for ``[lo, hi)``."""
        below = min(hi, daily_mark)
        if lo < below and self._fleet_answers():
            self.rollup("stats_daily_fleet_rollup", lo, below)
        elif lo < below:
            self.rollup("stats_daily_rollup", lo, below, self._not_pending(days=True))
            self.pending_day_hours(lo, below)
            self.pending_raw(lo, below)
        above = max(lo, daily_mark)
        if above < hi:
            self.plain_hourly(above, hi, hourly_mark)

    def _union(self, site: bool) -> str:
        """The branches as one relation ``s``, joined to the registry (``c``) for ``site``."""
        join = (
            "LEFT JOIN cameras c ON c.device_id = s.device_id AND c.camera_id = s.camera_id"
            if site
            else ""
        )
        return f"""FROM ({" UNION ALL ".join(self.branches)}) AS s {join}"""

    def sql(self, group_site: bool) -> str:
        """Every measure per bucket and dimension (and camera, and site with ``group_site``)."""
        camera = "s.device_id, s.camera_id" if self.per_camera else "NULL::text, NULL::text"
        site = "c.site" if group_site else "NULL::text"
        return f"""SELECT s.bucket, {camera.split(", ")[0]} AS device_id,
       {camera.split(", ")[1]} AS camera_id, {site} AS site,
       s.gender, s.age_band, s.direction, {_TOTALS}
{self._union(group_site)}
GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
LIMIT {MAX_ROWS + 1}"""

    def cells_sql(self, columns: Sequence[str], limit: int) -> str:
        """One row per bucket and group (the ``columns`` asked for, others null), with the
        sums, each gender's and age band's watchers and each direction's passers-by: the
        answer's cells, summed in the database, so the rows read are as many as the
        answer holds (the 81 gender x age band x direction rows of :meth:`sql` would be
        up to 81 times more). At most ``limit + 1`` rows, so no estimate can make the hub
        read more."""
        exprs = {"site": "c.site"} | {
            name: f"s.{name}" for name in ("device_id", "camera_id", *_DIMENSIONS)
        }
        keys = ", ".join(
            f"{exprs[name] if name in columns else 'NULL::text'} AS {name}"
            for name in ("device_id", "camera_id", "site", *_DIMENSIONS)
        )
        marginals = ",\n       ".join(
            f"coalesce(sum(s.{_MARGINAL_OF[name]}) FILTER (WHERE s.{name} = '{value}'), 0)::bigint"
            f" AS {name}_{i}"
            for name, values in _DIMENSIONS.items()
            for i, value in enumerate(values)
        )
        return f"""SELECT s.bucket, {keys},
       {_TOTALS},
       {marginals}
{self._union("site" in columns)}
GROUP BY 1, 2, 3, 4, 5, 6, 7
LIMIT {int(limit) + 1}"""


# A cell of :meth:`_Statement.cells_sql`: the bucket and six group columns, then its
# measures: the eight sums of ``_TOTALS``, then each gender's and age band's watchers and
# each direction's passers-by.
_CELL_KEYS = 7
_SUMS_WIDTH = 8 + sum(len(values) for values in _DIMENSIONS.values())

_GROUP_FIELDS: dict[str, tuple[str, ...]] = {
    "site": ("site",),
    "device": ("device_id",),
    "camera": ("device_id", "camera_id"),
    "gender": ("gender",),
    "age_band": ("age_band",),
    "direction": ("direction",),
}
