"""What one-id-one-row costs the write path: the claim in ``event_ids`` against the
statement it replaced (``ON CONFLICT (event_id, last_seen)``, which let one id be stored
again with another ``last_seen``).

Usage::

    python bench/idempotency.py [--batches 200] [--batch-size 500] [--rounds 5]

Two throwaway databases on the local PostgreSQL, migrated by the hub, one per statement.
Each round writes ``--batches`` batches of new events (from the fleet simulator) through
each statement in turn, then the same batches again (a full redelivery: every row a
duplicate), so both grow alike and share the machine's noise. Prints events per second
per round (median, p10, p90) and the ratio new / old, measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_hub.settings import HubSettings
from cloud_hub.storage.db import open_pool, prepare_database
from cloud_hub.storage.event_writes import (
    COUNT_NEW_PER_DEVICE,
    EVENT_ARRAYS,
    EVENT_FIELDS,
    INSERT_EVENT_ROWS,
    _columns,
    store_batch,
)
from cloud_hub.tools.simulated_fleet import Fleet
from edge_agent.contract import PersonEvent

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

# The statement before migration 008: the hub's own but for the claim.
_OLD_INSERT = f"""
WITH new AS (
    {INSERT_EVENT_ROWS}
    FROM {EVENT_ARRAYS} AS e({EVENT_FIELDS})
    ON CONFLICT (event_id, last_seen) DO NOTHING
    RETURNING event_id, device_id, last_seen
), {COUNT_NEW_PER_DEVICE}
"""

Write = Callable[[asyncpg.Pool, list[PersonEvent]], Awaitable[int]]


async def _new(pool: asyncpg.Pool, events: list[PersonEvent]) -> int:
    return len(await store_batch(pool, events, []))


async def _old(pool: asyncpg.Pool, events: list[PersonEvent]) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return len(await conn.fetch(_OLD_INSERT, *_columns(events)))


async def _round(pool: asyncpg.Pool, write: Write, batches: list[list[PersonEvent]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        await write(pool, batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def _summary(rates: list[float]) -> str:
    q = statistics.quantiles(rates, n=10) if len(rates) > 1 else [rates[0]] * 9
    return f"median {statistics.median(rates):9,.0f}/s  p10 {q[0]:9,.0f}  p90 {q[-1]:9,.0f}"


async def main(args: argparse.Namespace) -> None:
    names = [f"bench_idem_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    urls = [ADMIN.rsplit("/", 1)[0] + f"/{n}" for n in names]
    for url in urls:
        await prepare_database(url, HubSettings(database_url=url, timescaledb="off"))
    pools = [await open_pool(url, 2) for url in urls]
    if args.without_last_seen_index:
        await pools[0].execute("DROP INDEX event_ids_last_seen")
    fleet = Fleet(500, 4, seed=1, prefix="bench")
    rates: dict[str, list[float]] = {
        "new": [],
        "old": [],
        "new redelivered": [],
        "old redelivered": [],
    }
    try:
        for _ in range(args.rounds):
            now = datetime.now(UTC)
            batches = [
                [fleet.event(now) for _ in range(args.batch_size)] for _ in range(args.batches)
            ]
            for label, pool, write in (("new", pools[0], _new), ("old", pools[1], _old)):
                rates[label].append(await _round(pool, write, batches))
            for label, pool, write in (("new", pools[0], _new), ("old", pools[1], _old)):
                rates[f"{label} redelivered"].append(await _round(pool, write, batches))
    finally:
        for pool in pools:
            await pool.close()
        admin = await asyncpg.connect(ADMIN)
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    total = args.rounds * args.batches * args.batch_size
    print(
        f"{args.rounds} rounds x {args.batches} batches x {args.batch_size} events "
        f"({total:,} new rows per statement), plain PostgreSQL"
    )
    for label, values in rates.items():
        print(f"  {label:<16} {_summary(values)}")
    for kind in ("", " redelivered"):
        ratio = statistics.median(rates[f"new{kind}"]) / statistics.median(rates[f"old{kind}"])
        print(f"  ratio new/old{kind or ' (new rows)'}: {ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--without-last-seen-index", action="store_true", help="what the retention index costs"
    )
    asyncio.run(main(parser.parse_args()))
