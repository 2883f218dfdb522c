"""Storage backends for the hub's storage and stats tests: every test that takes
``storage`` runs twice, on plain PostgreSQL (the local server, a fresh database) and on
TimescaleDB (PGlite with TimescaleDB 2.23 over the wire protocol, from
``tests/timescale``), and must give the same answers on both.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import PG_ADMIN_URL, free_port

TIMESCALE_DIR = Path(__file__).resolve().parents[1] / "timescale"

# Everything the hub's migrations create, so one PGlite server serves test after test.
# (A session cannot drop and re-create the timescaledb extension, and PGlite has one.)
_RESET_SQL = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT format('%I.%I', view_schema, view_name) AS name
             FROM timescaledb_information.continuous_aggregates
             ORDER BY materialization_hypertable_name DESC LOOP
        EXECUTE 'DROP MATERIALIZED VIEW IF EXISTS ' || r.name || ' CASCADE';
    END LOOP;
    FOR r IN SELECT c.oid::regclass::text AS name, c.relkind
             FROM pg_class c
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.objid = c.oid AND d.deptype = 'e') LOOP
        EXECUTE 'DROP ' || CASE WHEN r.relkind = 'v' THEN 'VIEW' ELSE 'TABLE' END
                || ' IF EXISTS ' || r.name || ' CASCADE';
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure::text AS name
             FROM pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.objid = p.oid AND d.deptype = 'e') LOOP
        EXECUTE 'DROP FUNCTION IF EXISTS ' || r.name || ' CASCADE';
    END LOOP;
END $$;
"""


def _npm_install() -> None:
    """The pinned packages (make setup does this once; here only if it was skipped)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node and npm are needed for the TimescaleDB tests (make setup)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=TIMESCALE_DIR,
        check=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def pglite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PGlite + TimescaleDB server on a free port for this session (in memory)."""
    if not (TIMESCALE_DIR / "node_modules" / "@unni-craftsman" / "pglite").is_dir():
        _npm_install()
    node = shutil.which("node")
    assert node, "node is needed for the TimescaleDB tests"
    port = free_port()
    log_path = tmp_path_factory.mktemp("pglite") / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [node, str(TIMESCALE_DIR / "serve.mjs"), "--port", str(port)],
            cwd=TIMESCALE_DIR,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while b"ready" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"PGlite did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class StorageDb:
    """An empty database of one backend: ``url`` for the hub, ``backend`` its kind."""

    backend: str  # "plain" or "timescaledb", as cloud_hub.storage.db.Backend
    url: str


async def _reset_pglite(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        await conn.execute(_RESET_SQL)
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def fresh_storage(backend: str, request: pytest.FixtureRequest) -> Iterator[StorageDb]:
    """An empty database: a new one on PostgreSQL, the reset PGlite one for TimescaleDB."""
    if backend == "timescaledb":
        url = request.getfixturevalue("pglite_url")
        asyncio.run(_reset_pglite(url))
        yield StorageDb("timescaledb", url)
        return
    name = f"audience_store_{uuid.uuid4().hex[:10]}"
    yield StorageDb("plain", PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    asyncio.run(_drop_database(name))


@pytest.fixture(params=["plain", "timescaledb"])
def storage(request: pytest.FixtureRequest) -> Iterator[StorageDb]:
    """An empty database, once per backend; the hub migrates it on first use."""
    yield from fresh_storage(request.param, request)


@pytest.fixture
def plain_storage(request: pytest.FixtureRequest) -> Iterator[StorageDb]:
    """An empty plain PostgreSQL database (for tests comparing the two backends)."""
    yield from fresh_storage("plain", request)


@pytest.fixture
def timescale_storage(request: pytest.FixtureRequest) -> Iterator[StorageDb]:
    """The reset TimescaleDB (PGlite) database (for tests comparing the two backends)."""
    yield from fresh_storage("timescaledb", request)


@pytest.fixture(autouse=True)
def _no_hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings in these tests come from the test, never from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("HUB_"):
            monkeypatch.delenv(key)
