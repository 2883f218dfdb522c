"""Storage backends for the hub's storage and stats tests: every test that takes
``storage`` runs twice, on plain PostgreSQL (the local server, 127.0.0.1:5432) and on
TimescaleDB 2.28.3 (a second PostgreSQL 15 cluster on 127.0.0.1:5433 with the extension
preloaded, so its job scheduler runs: ``.ci/timescaledb.sh``), each test in a fresh
database, and must give the same answers on both.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import PG_ADMIN_URL
from tests.paths import REPO

TSDB_ADMIN_URL = os.environ.get(
    "TEST_TSDB_ADMIN_URL", "postgresql://postgres@127.0.0.1:5433/postgres"
)
TSDB_VERSION = "2.28.3"
_TSDB_STATE = Path.home() / ".cache" / "audience" / "timescaledb"
_TSDB_WAIT_S = 1200.0  # a cold build started by `make services` takes minutes


async def _tsdb_version(url: str) -> str | None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        version: str | None = await conn.fetchval(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
        preload = await conn.fetchval("SHOW shared_preload_libraries")
        assert "timescaledb" in preload, f"timescaledb is not preloaded at {url}"
        return version
    finally:
        await conn.close()


def _tsdb_answers() -> str | None:
    try:
        return asyncio.run(_tsdb_version(TSDB_ADMIN_URL))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None


@pytest.fixture(scope="session")
def tsdb_admin_url(pytestconfig: pytest.Config) -> str:
    """The TimescaleDB server's admin URL, once it answers.

    ``make services`` starts its build and cluster in the background; when the server
    does not answer yet, this runs ``.ci/timescaledb.sh``, which waits for a running
    build on its lock (or builds), and fails with the build's log if that fails.
    """
    if _tsdb_answers() is None:
        done = subprocess.run(
            [str(REPO / ".ci" / "timescaledb.sh")],
            capture_output=True,
            text=True,
            timeout=_TSDB_WAIT_S,
        )
        if done.returncode != 0:
            log = _TSDB_STATE / "build.log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            pytest.fail(f"no TimescaleDB at {TSDB_ADMIN_URL}:\n{done.stdout}{done.stderr}{tail}")
    version = _tsdb_answers()
    assert version == TSDB_VERSION, f"TimescaleDB {version} installed, tests expect {TSDB_VERSION}"
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:  # in the CI log, uncaptured
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nstorage tests on TimescaleDB {version} at {TSDB_ADMIN_URL}")
    return TSDB_ADMIN_URL


@dataclass(frozen=True)
class StorageDb:
    """An empty database of one backend: ``url`` for the hub, ``backend`` its kind."""

    backend: str  # "plain" or "timescaledb", as cloud_hub.storage.db.Backend
    url: str


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def fresh_storage(backend: str, request: pytest.FixtureRequest) -> Iterator[StorageDb]:
    """A new, empty database on the backend's server (the hub creates and migrates it)."""
    admin = request.getfixturevalue("tsdb_admin_url") if backend == "timescaledb" else PG_ADMIN_URL
    name = f"audience_store_{uuid.uuid4().hex[:10]}"
    yield StorageDb(backend, admin.rsplit("/", 1)[0] + f"/{name}")
    asyncio.run(_drop_database(admin, name))


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
    """An empty TimescaleDB database (for tests comparing the two backends)."""
    yield from fresh_storage("timescaledb", request)


@pytest.fixture(autouse=True)
def _no_hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings in these tests come from the test, never from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("HUB_"):
            monkeypatch.delenv(key)
    # On TimescaleDB the hub runs the policies itself, when the tests' maintenance rounds
    # call for them; tests of the database's own scheduler set "auto" or "database".
    monkeypatch.setenv("HUB_ROLLUP_JOBS", "hub")
