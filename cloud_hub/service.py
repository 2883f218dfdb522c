"""The running hub: database pool, live cache and MQTT ingest, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import structlog

from cloud_hub import metrics
from cloud_hub.ingest.consumer import MqttIngest
from cloud_hub.live.cache import LiveCache
from cloud_hub.retry import retry_with_backoff
from cloud_hub.settings import HubSettings
from cloud_hub.storage.db import open_pool, prepare_database
from cloud_hub.storage.rollups import Maintainer

log = structlog.get_logger(__name__)

# A database that is still starting (compose, boot order) rather than one that is wrong.
_NOT_UP_YET = (OSError, asyncpg.CannotConnectNowError, TimeoutError)


class Hub:
    """Owns the hub's resources; the API reads them, the lifespan starts and stops them."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.cache = LiveCache(
            settings.redis_url,
            namespace=settings.topic_root,
            ttl_s=settings.recent_ttl_s,
            max_per_camera=settings.recent_max_per_camera,
        )
        self._pool: asyncpg.Pool | None = None
        self._ingest: MqttIngest | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._rollups: Maintainer | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        """The shared connection pool (after :meth:`start`)."""
        assert self._pool is not None, "hub not started"
        return self._pool

    @property
    def ingest(self) -> MqttIngest:
        """The MQTT consumer (after :meth:`start`)."""
        assert self._ingest is not None, "hub not started"
        return self._ingest

    async def start(self) -> None:
        """Migrate, connect, subscribe; raises if the database cannot be reached at all."""
        applied = await self._prepare_database()
        self._pool = await open_pool(self.settings.database_url, self.settings.db_pool_size)
        await self.cache.start()
        self._rollups = Maintainer(self._pool, self.settings)
        self._rollups.start()
        self._ingest = MqttIngest(self.settings, self._pool, self.cache)
        self._ingest.start()
        self._consumer = asyncio.create_task(self._consume(self._ingest), name="ingest")
        log.info(
            "hub_started",
            migrations_applied=applied,
            mqtt=f"{self.settings.mqtt_host}:{self.settings.mqtt_port}",
            protocol=self.settings.mqtt_protocol,
            live_cache=self.cache.enabled,
        )

    @staticmethod
    async def _consume(ingest: MqttIngest) -> None:
        """Run the ingest consumer; should it ever fail, say so, count it and start it again.

        Its writes retry by themselves (nothing is acked before it commits), so reaching
        here means a bug outside them; restarting keeps the hub ingesting meanwhile.
        """
        while True:
            try:
                await ingest.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.TASK_FAILURES.labels(task="ingest").inc()
                log.exception("ingest_crashed", restart_in_s=1.0)
                await asyncio.sleep(1.0)

    async def _prepare_database(self) -> list[str]:
        """Migrate, waiting for a database that starts after the hub (compose, boot order)."""
        deadline = time.monotonic() + self.settings.db_startup_wait_s

        def worth_retrying(exc: Exception, delay: float) -> bool:
            if not isinstance(exc, _NOT_UP_YET) or time.monotonic() + delay > deadline:
                return False
            log.warning("database_unreachable", error=str(exc), retry_in_s=delay)
            return True

        return await retry_with_backoff(
            lambda: prepare_database(self.settings.database_url, self.settings),
            worth_retrying,
            self.settings.db_retry_max_s,
        )

    async def stop(self) -> None:
        """Stop consuming first (unacked messages go back to the broker), then disconnect."""
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        if self._ingest is not None:
            self._ingest.stop()
        if self._rollups is not None:
            await self._rollups.stop()
        await self.cache.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("hub_stopped")

    @property
    def rollups(self) -> Maintainer:
        """The rollup upkeep (after :meth:`start`)."""
        assert self._rollups is not None, "hub not started"
        return self._rollups

    @property
    def consuming(self) -> bool:
        """Whether the ingest task is still running (it only ends on a bug or on stop)."""
        return self._consumer is not None and not self._consumer.done()

    async def db_ok(self) -> bool:
        """Whether the database answers a trivial query within two seconds."""
        try:
            async with asyncio.timeout(2):
                await self.pool.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        return True
