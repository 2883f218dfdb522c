"""Fixtures for fault tests: private services to break, and hubs wired to them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HubFactory, RunningHub
from tests.faults.harness import PrivateMosquitto, PrivatePostgres


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """One PostgreSQL cluster for the fault tests (each test uses its own database)."""
    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def fault_database(private_postgres: PrivatePostgres) -> Iterator[str]:
    """A database name on the private server (the hub creates it); the server is left
    running for the next test even if this one failed while it was stopped."""
    if not private_postgres.running():
        private_postgres.start()
    yield private_postgres.url(f"faults_{uuid.uuid4().hex[:10]}")
    if not private_postgres.running():
        private_postgres.start()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    """A Mosquitto on a free port, persistence in this test's tmp dir."""
    broker = PrivateMosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@dataclass
class FaultRig:
    """A private broker, a private database, and hubs (``cloud-hub serve``) using both."""

    broker: PrivateMosquitto
    postgres: PrivatePostgres
    database_url: str
    topic_root: str
    factory: HubFactory

    def start_hub(self, **overrides: Any) -> RunningHub:
        """A hub on the private broker and database; ``overrides`` are ``HubSettings``."""
        return self.factory.start(mqtt_port=self.broker.port, **overrides)

    def restart_hub(self, hub: RunningHub) -> RunningHub:
        """The same hub again: same client id (its broker session), same settings."""
        return self.factory.start(hub.settings)


@pytest.fixture
def rig(
    private_broker: PrivateMosquitto,
    private_postgres: PrivatePostgres,
    fault_database: str,
    topic_root: str,
    tmp_path: Path,
) -> Iterator[FaultRig]:
    """Everything a fault test breaks, stopped at the end of the test."""
    factory = HubFactory(fault_database, topic_root, tmp_path)
    yield FaultRig(private_broker, private_postgres, fault_database, topic_root, factory)
    factory.stop_all()
