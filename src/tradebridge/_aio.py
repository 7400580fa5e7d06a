"""Small asyncio helpers that keep cancellation intact."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

# The ground floor imports nothing of tradebridge: the standard logger, which the JSON
# chain renders like every other (obs/logging.py routes it).
_log = logging.getLogger("tradebridge.aio")

#: How long a cancelled task may run before it is cancelled again (see ``cancel_and_wait``).
CANCEL_AGAIN_AFTER_S = 10.0


async def cancel_and_wait(
    *tasks: asyncio.Task[object] | asyncio.Future[object] | None,
    again_after_s: float = CANCEL_AGAIN_AFTER_S,
) -> None:
    """Cancel ``tasks`` and wait for them to end, without swallowing our own cancellation.

    ``with suppress(CancelledError): await task`` after ``task.cancel()`` also eats a
    cancellation aimed at the caller, which then never stops (a shutdown that hangs). Here a
    child's ``CancelledError`` is absorbed only while nobody is cancelling the caller; a
    child's own failure is absorbed too, because the caller is tearing it down anyway.

    A child still running ``again_after_s`` after its cancel is cancelled again (logged,
    naming it): Python 3.11's ``asyncio.wait_for`` (asyncpg's) loses a cancellation that
    arrives as its awaitable finishes, and a loop that lost its cancel would run, and hold
    the shutdown, forever. A cleanup cut short by the second cancel is no worse than a
    crash, which everything here is built to survive.
    """
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    running = {t for t in live if not t.done()}
    while running:
        _, running = await asyncio.wait(running, timeout=again_after_s)
        for task in running:
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            _log.warning("task %s still runs %.0f s after its cancel: cancelling it again",
                         name, again_after_s)  # fmt: skip
            task.cancel()
    current = asyncio.current_task()
    for task in live:
        try:
            await task
        except asyncio.CancelledError:
            if current is not None and current.cancelling():
                raise
        except Exception:  # noqa: BLE001 - a child being torn down may fail any way
            with contextlib.suppress(Exception):
                pass


def reraise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task is being cancelled.

    For ``except Exception`` blocks in loops: a library that turned our cancellation into
    another exception must not make the loop go round again. Also before a loop's pause: a
    cancellation lost inside the round (Python 3.11's ``wait_for`` drops one that races a
    result) leaves the task "cancelling" though nothing was raised.
    """
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError


_R = TypeVar("_R")


async def single_flight(
    flights: dict[str, asyncio.Future[_R]], key: str, read: Callable[[], Awaitable[_R]]
) -> _R:
    """Return ``read()``, or join the same read already in flight under ``key``.

    The read runs in a task of its own, so that one caller's cancellation does not cancel
    it for the others; it is forgotten once done (callers keep what it returned).
    """
    flight = flights.get(key)
    if flight is None:

        async def run() -> _R:
            return await read()

        flight = flights[key] = asyncio.ensure_future(run())

        def done(task: asyncio.Future[_R]) -> None:
            if flights.get(key) is task:
                del flights[key]
            if not task.cancelled():
                task.exception()  # retrieved: every caller that still waits gets it raised

        flight.add_done_callback(done)
    return await asyncio.shield(flight)


async def start_in_thread(start: Callable[[], _R], stop: Callable[[], object]) -> _R:
    """Return ``start()``, run in a thread; cancelled meanwhile, undo it with ``stop()``.

    A thread cannot be cancelled: ``await asyncio.to_thread(server.start)`` cancelled midway
    returns at once while the start goes on (a server process spawned, a port bound), and
    the caller's cleanup never learns of it. Here the cancellation waits for the start to
    end, stops what it started, then propagates.
    """
    job = asyncio.ensure_future(asyncio.to_thread(start))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait({job})
        if not job.cancelled() and job.exception() is None:
            await asyncio.to_thread(stop)
        raise
