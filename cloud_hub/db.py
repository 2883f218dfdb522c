"""Database lifecycle: create the database if missing, apply migrations, open the pool.

Migrations are plain SQL files ``sql/NNN_name.sql`` applied in order, each in its own
transaction, and recorded in ``schema_migrations`` so a restart applies only new ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Serialises concurrent hubs migrating the same database.
_MIGRATION_LOCK_KEY = 0x4855_4230


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file under ``cloud_hub/sql``."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The packaged migrations, sorted by version."""
    found = []
    for entry in resources.files("cloud_hub").joinpath("sql").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


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


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database has not seen; return their names."""
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
        for migration in migrations():
            if migration.version in done:
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


async def prepare_database(url: str) -> list[str]:
    """Create and migrate the database; what ``cloud-hub migrate`` and startup run."""
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def open_pool(url: str, size: int) -> asyncpg.Pool:
    """A connection pool; the ingest writer and the API share it."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=size, command_timeout=30)
    assert pool is not None
    return pool
