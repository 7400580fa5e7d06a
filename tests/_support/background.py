"""Background work for budget tests: reads made as reconcile's and the tracker's tasks make
them (``budget.mark_background``), and a reads window whose background share is used up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tradebridge.brokers.budget import RequestBudget, RequestKind, mark_background

_T = TypeVar("_T")

# A reads window of 3 a minute, 2 of them reserved for the reads orders wait for.
SMALL_READS = {"reads_per_minute": 3, "reads_reserved_per_minute": 2}


async def in_background(read: Callable[[], Awaitable[_T]]) -> _T:
    """Return ``read()`` run in a task of its own marked as background work."""

    async def run() -> _T:
        mark_background()
        return await read()

    return await asyncio.create_task(run())


async def read_after_the_background_share(
    budget: RequestBudget, user: str, read: Callable[[], Awaitable[_T]]
) -> _T:
    """Take the one background read ``SMALL_READS`` leaves ``user`` (as reconcile's look-ups
    after a restart), then return ``read()`` made as background work within 5 s (a read
    left in the background share would wait a minute for the window)."""
    await in_background(lambda: budget.bucket(user).acquire(RequestKind.READ))
    async with asyncio.timeout(5):
        return await in_background(read)
