"""The last check before an order request leaves: may this process still send it?

A worker writes a row ``submitted`` before its request leaves, under its liveness lock. If
the lock lapses meanwhile (its connection lost), another process may read the worker as dead,
mark the row ``unknown``, look the order up, find nothing (the request has not left yet) and
send it again. The dispatcher therefore puts a fence around each send (``fenced``) and
``BrokerHttp.request`` awaits it right before an order request leaves, after the request
budget's wait: the fence passes while the lock has been held throughout, and otherwise waits
for the lock and re-reads the row (``dispatch.liveness``). Reads, logins, requests outside a
fence and requests of tasks started inside one (which inherit the context) are not checked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol


class Fence(Protocol):
    """What an order request awaits before it leaves."""

    async def check(self) -> None:
        """Return when the request may leave; raise ``SendFenced`` when it must not."""


# The fence and the task that set it.
_FENCE: ContextVar[tuple[Fence, asyncio.Task[object] | None] | None] = ContextVar(
    "tradebridge_send_fence", default=None
)


@contextlib.contextmanager
def fenced(fence: Fence | None) -> Iterator[None]:
    """Check the order requests this task makes inside with ``fence``."""
    token = _FENCE.set(None if fence is None else (fence, asyncio.current_task()))
    try:
        yield
    finally:
        _FENCE.reset(token)


async def check_fence() -> None:
    """Await the current fence, if any (``BrokerHttp.request``, before an order leaves)."""
    current = _FENCE.get()
    if current is not None and current[1] is asyncio.current_task():
        await current[0].check()
