"""Small asyncio helpers that keep cancellation intact."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(*tasks: asyncio.Task[object] | asyncio.Future[object] | None) -> None:
    """Cancel ``tasks`` and wait for them to end, without swallowing our own cancellation.

    ``with suppress(CancelledError): await task`` after ``task.cancel()`` also eats a
    cancellation aimed at the caller, which then never stops (a shutdown that hangs). Here a
    child's ``CancelledError`` is absorbed only while nobody is cancelling the caller; a
    child's own failure is absorbed too, because the caller is tearing it down anyway.
    """
    live = [t for t in tasks if t is not None]
    for task in live:
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
    another exception must not make the loop go round again.
    """
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError
