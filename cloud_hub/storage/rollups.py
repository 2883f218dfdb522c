"""Keeping the hour and day statistics current, on TimescaleDB and on plain PostgreSQL.

Both backends expose the same relations (``cloud_hub/storage/sql/004_storage.*.sql``):
``stats_hourly`` and ``stats_daily`` answer every hour or day exactly as an aggregation of
``person_events`` would, reading materialised rollups below a watermark and raw events
above it. What differs is who materialises:

- TimescaleDB: continuous aggregates with refresh, compression and retention policies
  (``cloud_hub.storage.db.configure_storage`` applies the ``HUB_*`` settings at every
  start). Its background workers run them; where none run (no scheduler in
  ``pg_stat_activity``), or with ``HUB_ROLLUP_JOBS=hub`` (which unschedules them in the
  database), the hub runs the same jobs with ``CALL run_job``.
- Plain PostgreSQL: the hub (:func:`maintain`, every ``HUB_ROLLUP_REFRESH_S``) creates
  partitions ahead, drops expired ones, re-aggregates the hours late events changed
  (logged by a statement trigger) and materialises hours that ended
  ``HUB_ROLLUP_LAG_S`` ago.

Several hubs may share a database: a transaction-level advisory lock lets one of them
do each round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from cloud_hub import metrics
from cloud_hub.settings import HubSettings
from cloud_hub.storage.db import (
    AGGREGATE_LAG,
    HUB_JOB_RELATIONS,
    Backend,
    detect_backend,
    ensure_partitions,
    relation_exists,
)

log = structlog.get_logger(__name__)

_LOCK_KEY = 0x4855_4231  # one maintenance round at a time per database
_BEGINNING = datetime.min.replace(tzinfo=UTC)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
# The rollups' measures, in their columns' order (migrations 004 and 010): passers-by
# (events), first visits, the sums behind mean age (watchers' ages: gender and age describe
# watchers) and mean dwell, watchers, and watchers' known attention.
_MEASURES = """count(*), count(*) FILTER (WHERE return_of IS NULL),
               sum(age::double precision) FILTER (WHERE watcher), count(age) FILTER (WHERE watcher),
               sum(dwell_s::double precision), count(*) FILTER (WHERE watcher),
               sum(attention_s::double precision) FILTER (WHERE watcher),
               count(attention_s) FILTER (WHERE watcher)"""
_DIMENSIONS = """device_id, camera_id, coalesce(gender, 'unknown'), age_band,
                 coalesce(direction, 'none')"""
_SUMS = """sum(events), sum(visitors), sum(age_sum), sum(age_n), sum(dwell_sum), sum(watchers),
           sum(attention_sum), sum(attention_n)"""
_ROLLUP_DIMENSIONS = "device_id, camera_id, gender, age_band, direction"
# What a watermark's advance materialises: hours from raw events, days from those hours.
_HOURS_FROM_EVENTS = f"""SELECT date_trunc('hour', last_seen, 'UTC'), {_DIMENSIONS}, {_MEASURES}
    FROM person_events WHERE last_seen >= $1 AND last_seen < $2
    GROUP BY 1, 2, 3, 4, 5, 6"""
_DAYS_FROM_HOURS = f"""SELECT date_trunc('day', bucket, 'UTC'), {_ROLLUP_DIMENSIONS}, {_SUMS}
    FROM stats_hourly_rollup WHERE bucket >= $1 AND bucket < $2
    GROUP BY 1, 2, 3, 4, 5, 6"""


def _aware(moment: datetime) -> datetime:
    """asyncpg reads -infinity and infinity as naive ``datetime.min`` and ``max``."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour ``moment`` falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    """The start of the UTC day ``moment`` falls in."""
    return floor_hour(moment).replace(hour=0)


# --- one maintenance round ----------------------------------------------------------------


async def hub_runs_jobs(conn: asyncpg.Connection, settings: HubSettings) -> bool:
    """TimescaleDB: whether the hub must run the policies (no scheduler runs them)."""
    if settings.rollup_jobs != "auto":
        return settings.rollup_jobs == "hub"
    scheduler = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                          WHERE datname = current_database()
                            AND (backend_type ILIKE 'TimescaleDB Background Worker Scheduler%'
                                 OR application_name
                                    ILIKE 'TimescaleDB Background Worker Scheduler%'))"""
    )
    return not scheduler


async def maintain(
    conn: asyncpg.Connection, settings: HubSettings, backend: Backend | None = None
) -> None:
    """One round: bring rollups, partitions, compression and retention up to date."""
    backend = backend or await detect_backend(conn)
    if backend is Backend.TIMESCALEDB:
        await _first_refresh(conn, settings)
        if await hub_runs_jobs(conn, settings):
            await run_timescaledb_jobs(conn)
    elif backend is Backend.PLAIN:
        await _maintain_plain(conn, settings)
    if backend is not None:
        forgotten = await forget_event_ids(conn, settings)
        if forgotten:
            log.info("event_ids_forgotten", count=forgotten)


async def _first_refresh(conn: asyncpg.Connection, s: HubSettings) -> None:
    """Materialise everything once when nothing is: the refresh policies only look back
    ``HUB_ROLLUP_LATE_DAYS``, so events stored before the aggregates existed (a migrated
    database) would otherwise fall below the watermark unmaterialised."""
    for view, behind in AGGREGATE_LAG.items():
        if not await relation_exists(conn, view):
            continue
        mat = await conn.fetchval(
            """SELECT format('%I.%I', materialization_hypertable_schema,
                             materialization_hypertable_name)
               FROM timescaledb_information.continuous_aggregates WHERE view_name = $1""",
            view,
        )
        if await conn.fetchval(
            f"""SELECT EXISTS (SELECT 1 FROM {mat} WHERE bucket < $1)
                       AND NOT EXISTS (SELECT 1 FROM person_events WHERE last_seen < $1)""",
            s.earliest_event,
        ):
            # Rows before the earliest time were dead-lettered (migration 008); the refresh
            # policies look back only HUB_ROLLUP_LATE_DAYS, so drop their buckets here.
            # Once: rows kept before a later-raised HUB_EARLIEST_EVENT keep their buckets.
            log.info("rollup_refresh_before_earliest", view=view)
            if not await _refresh(conn, view, s.earliest_event):
                continue
        archive = await conn.fetchval("SELECT to_regclass($1)::text", f"{view}_archive")
        if await conn.fetchval(
            f"""SELECT NOT EXISTS (SELECT 1 FROM {mat})
                       AND ($1 OR EXISTS (SELECT 1 FROM person_events))""",
            archive is not None,
        ):
            log.info("rollup_first_refresh", view=view)
            lag = timedelta(seconds=s.rollup_lag_s) + behind
            if not await _refresh(conn, view, datetime.now(UTC) - lag):
                continue  # the archive waits for a round whose refresh ran
        if archive is not None:
            await _restore_archive(conn, view, mat)


async def _refresh(conn: asyncpg.Connection, view: str, end: datetime) -> bool:
    """Refresh ``view`` up to ``end``; False when TimescaleDB's scheduler is refreshing
    it at this moment (it refuses a second, concurrent refresh): the next round retries."""
    try:
        await conn.execute(
            "CALL refresh_continuous_aggregate($1, NULL, $2::timestamptz)", view, end
        )
    except asyncpg.exceptions.LockNotAvailableError:
        log.info("rollup_refresh_busy", view=view, hint="a policy refresh runs; next round")
        return False
    return True


# The columns of the continuous aggregates (migration 010) and of their archives.
_AGGREGATE_COLUMNS = (
    f"bucket, {_ROLLUP_DIMENSIONS}, events, visitors, age_sum, age_n, dwell_sum, watchers, "
    "attention_sum, attention_n"
)


async def _restore_archive(conn: asyncpg.Connection, view: str, mat: str) -> None:
    """Put back the buckets migration 010 kept aside (``{view}_archive``: those whose raw
    events retention had dropped, so no refresh can rebuild them) into the recreated
    aggregate's materialisation, once it has been refreshed: a refresh over them before
    would have deleted them again. Once, by whichever hub gets here first."""
    archive = f"{view}_archive"
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        if await conn.fetchval("SELECT to_regclass($1) IS NULL", archive):
            return
        # The daily refresh summed what hours were left of those days: the archive's whole
        # days replace them.
        await conn.execute(f"DELETE FROM {mat} WHERE bucket IN (SELECT bucket FROM {archive})")
        restored = await conn.execute(
            f"INSERT INTO {mat} ({_AGGREGATE_COLUMNS}) SELECT {_AGGREGATE_COLUMNS} FROM {archive}"
        )
        await conn.execute(f"DROP TABLE {archive}")
    log.info("rollup_archive_restored", view=view, rows=int(restored.split()[-1]))


async def run_timescaledb_jobs(conn: asyncpg.Connection) -> None:
    """Run the hub's TimescaleDB policies once, hours before days, as the scheduler would."""
    order = {name: i for i, name in enumerate(AGGREGATE_LAG)}
    jobs = await conn.fetch(
        f"""SELECT job_id, proc_name, hypertable_name FROM timescaledb_information.jobs
           WHERE hypertable_name IN {HUB_JOB_RELATIONS}"""
    )
    ranked = sorted(
        jobs,
        key=lambda j: (
            j["proc_name"] != "policy_refresh_continuous_aggregate",
            order.get(j["hypertable_name"], 2),
            j["job_id"],
        ),
    )
    for job in ranked:
        await conn.execute("CALL run_job($1)", job["job_id"])


async def _maintain_plain(conn: asyncpg.Connection, s: HubSettings) -> None:
    # Three short transactions: creating or dropping a partition locks person_events, so
    # neither waits behind rollup work; rollups come before retention, so nothing is
    # dropped before it was materialised.
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_KEY):
            return
        await ensure_partitions(conn, s)
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_KEY):
            return
        await _refresh_plain(conn, s)
    if not (s.retention_days or s.rollup_retention_days):
        return
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_KEY):
            return
        if s.retention_days:
            dropped = await conn.fetchval(
                "SELECT hub_drop_partitions(now() - $1::interval)",
                timedelta(days=s.retention_days),
            )
            if dropped:
                log.info("partitions_dropped", count=dropped)
        if s.rollup_retention_days:
            await conn.execute(
                "DELETE FROM stats_hourly_rollup WHERE bucket < now() - $1::interval",
                timedelta(days=s.rollup_retention_days),
            )


async def _refresh_plain(conn: asyncpg.Connection, s: HubSettings) -> None:
    now: datetime = await conn.fetchval("SELECT now()")
    # '-infinity' (nothing materialised yet) as the earliest aware datetime.
    marks = {
        r["name"]: r["watermark"] or _BEGINNING
        for r in await conn.fetch(
            """SELECT name, CASE WHEN watermark > '-infinity' THEN watermark END AS watermark
               FROM rollup_watermarks FOR UPDATE"""
        )
    }
    hourly_mark, daily_mark = marks["stats_hourly"], marks["stats_daily"]

    # 1. Late events: re-aggregate the (device, hour)s they changed below the watermark.
    # Deleting the log entries first is what makes this safe without locks: an entry
    # committed later stays for the next round, and every entry taken here was committed
    # before the statements below take their snapshots, so they see its rows.
    changed = await conn.fetch("DELETE FROM rollup_invalidations RETURNING device_id, low, high")
    late = s.rollup_late_window
    horizon = now - late if late else None
    hours = _late_hours(changed, max(horizon or s.earliest_event, s.earliest_event), hourly_mark)
    if hours:
        await _reaggregate(conn, "stats_hourly_rollup", sorted(hours))
        day_horizon = horizon - _DAY if horizon else None
        days = {
            (device, floor_day(hour))
            for device, hour in hours
            if floor_day(hour) < daily_mark
            and (day_horizon is None or floor_day(hour) >= day_horizon)
        }
        if days:
            await _reaggregate(conn, "stats_daily_rollup", sorted(days))
        log.info("rollups_reaggregated", hours=len(hours), days=len(days))

    # 2. Materialise the hours and days that ended at least the lag ago.
    settled = now - timedelta(seconds=s.rollup_lag_s)
    await _materialise(conn, "stats_hourly", _HOURS_FROM_EVENTS, hourly_mark, floor_hour(settled))
    await _materialise(conn, "stats_daily", _DAYS_FROM_HOURS, daily_mark, floor_day(settled))


async def _materialise(
    conn: asyncpg.Connection, view: str, rows: str, mark: datetime, until: datetime
) -> None:
    """Materialise the buckets from the view's watermark ``mark`` up to ``until`` into its
    rollup table (``rows`` selects the buckets in ``[$1, $2)``), then move the watermark."""
    if until <= mark:
        return
    await conn.execute(f"INSERT INTO {view}_rollup {rows}", mark, until)
    await conn.execute("UPDATE rollup_watermarks SET watermark = $1 WHERE name = $2", until, view)


def _late_hours(
    changed: list[asyncpg.Record], since: datetime, watermark: datetime
) -> set[tuple[str, datetime]]:
    """The (device, hour)s logged spans touch between ``since`` and the watermark.

    The spans are clamped before they are walked: a span is whatever the rows said (a
    row from before time bounds existed may say -infinity, which asyncpg reads as
    ``datetime.min``), and only hours that can still change a rollup matter.
    """
    hours: set[tuple[str, datetime]] = set()
    for row in changed:
        low, high = max(_aware(row["low"]), since), min(_aware(row["high"]), watermark)
        if low > high:
            continue
        hour = floor_hour(low)
        while hour <= high and hour < watermark:
            hours.add((row["device_id"], hour))
            hour += _HOUR
    return hours


async def forget_event_ids(conn: asyncpg.Connection, settings: HubSettings) -> int:
    """Drop idempotency claims of events retention has dropped (both backends).

    A claim outlives its row by a chunk's width: chunks and partitions go whole, once
    their newest possible row is past retention, so a claim is forgotten only when its
    row is surely gone (a redelivery of such an old event would be stored again, and
    dropped again by the next retention round).
    """
    if not settings.retention_days:
        return 0
    keep = timedelta(days=settings.retention_days + settings.chunk_interval_days)
    result: str = await conn.execute(
        "DELETE FROM event_ids WHERE last_seen < now() - $1::interval", keep
    )
    return int(result.split()[-1])


async def _reaggregate(
    conn: asyncpg.Connection, table: str, keys: list[tuple[str, datetime]]
) -> None:
    """Recompute ``table``'s rows for these (device, bucket) keys from their source."""
    devices, buckets = [k[0] for k in keys], [k[1] for k in keys]
    await conn.execute(
        f"""DELETE FROM {table} r
            USING unnest($1::text[], $2::timestamptz[]) AS k(device_id, bucket)
            WHERE r.device_id = k.device_id AND r.bucket = k.bucket""",
        devices,
        buckets,
    )
    if table == "stats_hourly_rollup":
        source = f"""SELECT k.bucket, {_DIMENSIONS}, {_MEASURES}
            FROM unnest($1::text[], $2::timestamptz[]) AS k(dev, bucket)
            JOIN person_events e ON e.device_id = k.dev
             AND e.last_seen >= k.bucket AND e.last_seen < k.bucket + interval '1 hour'"""
    else:
        source = f"""SELECT k.bucket, {_ROLLUP_DIMENSIONS}, {_SUMS}
            FROM unnest($1::text[], $2::timestamptz[]) AS k(dev, bucket)
            JOIN stats_hourly_rollup h ON h.device_id = k.dev
             AND h.bucket >= k.bucket AND h.bucket < k.bucket + interval '1 day'"""
    await conn.execute(f"INSERT INTO {table} {source} GROUP BY 1, 2, 3, 4, 5, 6", devices, buckets)


# --- the hub's background task ------------------------------------------------------------


class Maintainer:
    """Runs :func:`maintain` every ``HUB_ROLLUP_REFRESH_S`` on the hub's pool."""

    def __init__(self, pool: asyncpg.Pool, settings: HubSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        self.failures = 0
        self.last_failed = False
        self.last_round_s: float | None = None

    @property
    def alive(self) -> bool:
        """Whether the loop is still running (it only ends when stopped)."""
        return self._task is not None and not self._task.done()

    @property
    def state(self) -> str:
        """For /healthz: ``ok``, ``failing`` (its last round failed) or ``stopped``."""
        if not self.alive:
            return "stopped"
        return "failing" if self.last_failed else "ok"

    def start(self) -> None:
        """Start the loop (a first round right away)."""
        self._task = asyncio.create_task(self._run(), name="rollups")

    async def stop(self) -> None:
        """Cancel the loop; a round in progress is rolled back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backend: Backend | None = None
        while True:
            started = time.monotonic()
            try:
                async with self._pool.acquire() as conn:
                    backend = backend or await detect_backend(conn)
                    await maintain(conn, self._settings, backend)
                self.rounds += 1
                self.last_failed = False
                self.last_round_s = time.monotonic() - started
                metrics.ROLLUP_ROUNDS.inc()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                # The database is away or busy: expected now and then, no traceback needed.
                self.failures += 1
                self.last_failed = True
                metrics.TASK_FAILURES.labels(task="rollups").inc()
                log.warning("rollup_maintenance_failed", error=str(exc))
            except Exception:
                # A bug or data this code did not foresee: say where, then try next round.
                self.failures += 1
                self.last_failed = True
                metrics.TASK_FAILURES.labels(task="rollups").inc()
                log.exception("rollup_maintenance_crashed")
            await asyncio.sleep(self._settings.rollup_refresh_s)
