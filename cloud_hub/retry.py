"""Retrying with backoff: the one loop the hub uses to wait out a database that is away.

The ingest writer retries a write until it commits (its messages stay unacked meanwhile)
and the service retries its start-up migration until a deadline; both double the wait
after each failure, from half a second up to ``HUB_DB_RETRY_MAX_S``. What counts as worth
another try, and what is logged or counted for it, stays with the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_DELAY_S = 0.5


async def retry_with_backoff(
    attempt: Callable[[], Awaitable[T]],
    should_retry: Callable[[Exception, float], bool],
    max_delay_s: float,
    first_delay_s: float = FIRST_DELAY_S,
) -> T:
    """Await ``attempt()`` until it returns, sleeping between tries; return its result.

    After a failure ``should_retry(error, delay)`` decides: True to sleep ``delay`` seconds
    and try again (it logs or counts the failure, knowing the coming wait), False to raise
    the error as it is. The delay doubles after each try, up to ``max_delay_s``.
    Cancellation is never caught.
    """
    delay = first_delay_s
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not should_retry(exc, delay):
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)
