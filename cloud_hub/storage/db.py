"""Database lifecycle: create the database if missing, apply migrations, apply the storage
settings, open the pool.

Migrations are plain SQL files ``sql/NNN_name.sql`` applied in order, each in its own
transaction, and recorded in ``schema_migrations`` so a restart applies only new ones.
A version can instead come as two variants, ``NNN_name.timescaledb.sql`` and
``NNN_name.plain.sql``: a database gets the one of its storage kind (:class:`Backend`),
which is chosen once, when the first variant migration runs (``HUB_TIMESCALEDB``), and
read back from the schema ever after.

After the migrations, at every start, :func:`configure_storage` applies the ``HUB_*``
storage settings: TimescaleDB's chunk width and its refresh, compression and retention
policies, or the plain backend's partitions (``cloud_hub.storage.rollups`` keeps the
statistics current from then on).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from importlib import resources
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from cloud_hub.settings import HubSettings

log = structlog.get_logger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+(?:\.(timescaledb|plain))?\.sql$")
# Serialises concurrent hubs migrating the same database.
_MIGRATION_LOCK_KEY = 0x4855_4230


class Backend(StrEnum):
    """How a database stores events: a hypertable with continuous aggregates, or
    PostgreSQL partitions with rollup tables the hub maintains."""

    TIMESCALEDB = "timescaledb"
    PLAIN = "plain"


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file under ``cloud_hub/storage/sql``; ``variant`` None means every backend."""

    version: int
    name: str
    sql: str
    variant: Backend | None = None


def migrations(backend: Backend | None = None) -> list[Migration]:
    """The packaged migrations, sorted by version: all of them, or one backend's."""
    found = []
    for entry in resources.files("cloud_hub.storage").joinpath("sql").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            variant = Backend(match.group(2)) if match.group(2) else None
            if backend is None or variant in (None, backend):
                found.append(
                    Migration(int(match.group(1)), entry.name, entry.read_text("utf-8"), variant)
                )
    return sorted(found, key=lambda m: (m.version, m.name))


def with_database(url: str, database: str) -> str:
    """The same server URL naming another database (keeps host, user and query)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(url: str) -> str:
    """The database a URL names (``audience`` in ``postgresql://host/audience``)."""
    return urlsplit(url).path.lstrip("/") or "postgres"


async def ensure_database(url: str) -> None:
    """Create the URL's database when it does not exist (connecting to ``postgres``)."""
    name = database_name(url)
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
        log.info("database_created", database=name)
    except asyncpg.DuplicateDatabaseError:
        pass  # Another hub created it between our two connects.
    finally:
        await admin.close()


async def detect_backend(conn: asyncpg.Connection) -> Backend | None:
    """The storage kind of a migrated database; None before the storage migration."""
    relkind = await conn.fetchval(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('person_events')"
    )
    if relkind == "p":
        return Backend.PLAIN
    if relkind is None or not await conn.fetchval(
        "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
    ):
        return None
    hypertable = await conn.fetchval(
        """SELECT 1 FROM timescaledb_information.hypertables
           WHERE hypertable_name = 'person_events'
             AND hypertable_schema = current_schema()"""
    )
    return Backend.TIMESCALEDB if hypertable else None


async def timescaledb_available(conn: asyncpg.Connection) -> bool:
    """Whether ``CREATE EXTENSION timescaledb`` can work here: installed already, or
    offered and preloaded (``shared_preload_libraries``), as TimescaleDB requires.
    (Probing with a rolled-back CREATE EXTENSION is no option: the session could then
    never create it.)"""
    if await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
        return True
    if not await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"):
        return False
    preload = str(await conn.fetchval("SELECT current_setting('shared_preload_libraries')"))
    if "timescaledb" in preload:
        return True
    log.warning(
        "timescaledb_not_preloaded",
        hint="add timescaledb to shared_preload_libraries to use it; using plain PostgreSQL",
    )
    return False


async def choose_backend(conn: asyncpg.Connection, preference: str) -> Backend:
    """The backend of this database: what it has, else what the setting and server allow."""
    found = await detect_backend(conn)
    if found is not None:
        if preference == "on" and found is Backend.PLAIN:
            log.warning("timescaledb_wanted_but_plain", hint="database was migrated without it")
        return found
    if preference == "off":
        return Backend.PLAIN
    if await timescaledb_available(conn):
        return Backend.TIMESCALEDB
    if preference == "on":
        raise RuntimeError("HUB_TIMESCALEDB=on but the server has no usable timescaledb")
    return Backend.PLAIN


async def migrate(
    conn: asyncpg.Connection,
    settings: HubSettings | None = None,
    *,
    up_to: int | None = None,
) -> list[str]:
    """Apply the migrations this database has not seen (up to version ``up_to``)."""
    settings = settings or HubSettings()
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        # Migration SQL reads the settings it needs from these session variables.
        await conn.execute(
            "SELECT set_config('hub.chunk_interval', $1, false),"
            " set_config('hub.earliest_event', $2, false)",
            f"{settings.chunk_interval_days} days",
            settings.earliest_event.isoformat(),
        )
        backend: Backend | None = None
        for migration in migrations():
            if migration.version in done or (up_to is not None and migration.version > up_to):
                continue
            if migration.variant is not None:
                backend = backend or await choose_backend(conn, settings.timescaledb)
                if migration.variant is not backend:
                    continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("migration_applied", migration=migration.name)
            applied.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return applied


# --- storage settings (at every start, after migrations) ---------------------------------


async def configure_storage(conn: asyncpg.Connection, settings: HubSettings) -> Backend | None:
    """Apply the storage settings: TimescaleDB policies, or the plain backend's partitions."""
    backend = await detect_backend(conn)
    if backend is Backend.TIMESCALEDB:
        # The migration lock: policies change with the schema.
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            async with conn.transaction():
                await _configure_timescaledb(conn, settings)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    elif backend is Backend.PLAIN:
        await ensure_partitions(conn, settings)
    return backend


# TimescaleDB's continuous aggregates, parents before the aggregates built on them, with
# how far behind HUB_ROLLUP_LAG_S each one's refresh ends: an hour behind what it is
# built on (a refresh reads its parent's materialisation). The policies' end offsets
# (configure_storage) and the hub's first refresh (rollups) both take them from here.
AGGREGATE_LAG: Final[Mapping[str, timedelta]] = {
    "stats_hourly": timedelta(),
    "stats_daily": timedelta(hours=1),
    "stats_hourly_fleet": timedelta(hours=1),  # migration 012
    "stats_daily_fleet": timedelta(hours=2),
}
# The relations whose TimescaleDB policies the hub configures (and may run itself).
HUB_JOB_RELATIONS = "(" + ", ".join(f"'{r}'" for r in ("person_events", *AGGREGATE_LAG)) + ")"


async def relation_exists(conn: asyncpg.Connection, name: str) -> bool:
    """Whether ``name`` exists: a database migrated only up to an older version lacks
    what later migrations add."""
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


async def _configure_timescaledb(conn: asyncpg.Connection, s: HubSettings) -> None:
    await conn.execute(
        "SELECT set_chunk_time_interval('person_events', $1::interval)",
        timedelta(days=s.chunk_interval_days),
    )
    lag = timedelta(seconds=s.rollup_lag_s)
    every = timedelta(seconds=s.rollup_refresh_s)
    late = s.rollup_late_window
    for view, behind in AGGREGATE_LAG.items():
        if not await relation_exists(conn, view):
            continue
        # A day is refreshed whole, including the one the late window starts in.
        start = (late and late + timedelta(days=1)) if "daily" in view else late
        end = lag + behind
        await conn.execute("SELECT remove_continuous_aggregate_policy($1, if_exists => true)", view)
        await conn.execute(
            """SELECT add_continuous_aggregate_policy($1, start_offset => $2::interval,
                   end_offset => $3::interval, schedule_interval => $4::interval)""",
            view,
            start,
            end,
            every,
        )
    await conn.execute("SELECT remove_compression_policy('person_events', if_exists => true)")
    if s.compress_after_days:
        await conn.execute(
            "SELECT add_compression_policy('person_events', compress_after => $1::interval)",
            timedelta(days=s.compress_after_days),
        )
    for relation, keep in (
        ("person_events", s.retention_days),
        ("stats_hourly", s.rollup_retention_days),
        ("stats_hourly_fleet", s.rollup_retention_days),
    ):
        if not await relation_exists(conn, relation):
            continue
        await conn.execute("SELECT remove_retention_policy($1, if_exists => true)", relation)
        if keep:
            await conn.execute(
                "SELECT add_retention_policy($1, drop_after => $2::interval)",
                relation,
                timedelta(days=keep),
            )
    # HUB_ROLLUP_JOBS=hub: the hub runs the policies (``rollups.run_timescaledb_jobs``),
    # so the scheduler must not run them too (two refreshes of one aggregate collide).
    await conn.execute(
        f"""SELECT alter_job(job_id, scheduled => $1) FROM timescaledb_information.jobs
           WHERE hypertable_name IN {HUB_JOB_RELATIONS}""",
        s.rollup_jobs != "hub",
    )


async def ensure_partitions(conn: asyncpg.Connection, s: HubSettings) -> int:
    """Partitions from one width back to two widths ahead of now (plain backend)."""
    made: int = await conn.fetchval(
        """SELECT hub_ensure_partitions(now() - width, now() + 2 * width)
           FROM person_events_partitioning"""
    )
    if made:
        log.info("partitions_created", count=made)
    return made


async def prepare_database(url: str, settings: HubSettings | None = None) -> list[str]:
    """Create and migrate the database, then apply the storage settings (policies,
    partitions); what ``cloud-hub migrate`` and startup run."""
    settings = settings or HubSettings()
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate(conn, settings)
        await configure_storage(conn, settings)
        return applied
    finally:
        await conn.close()


async def open_pool(url: str, size: int) -> asyncpg.Pool:
    """A connection pool; the ingest writer, the API and rollup upkeep share it."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=size, command_timeout=30)
    assert pool is not None
    return pool
