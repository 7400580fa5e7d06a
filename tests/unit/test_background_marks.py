"""Reconcile's and the tracker's tasks read in the background (``budget.mark_background``):
the request budget queues their reads behind those an order waits for, and leaves
``reads_reserved_per_minute`` of the reads window to the others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tradebridge.brokers.budget import is_background
from tradebridge.config import load_settings
from tradebridge.dispatch.reconcile import Reconciler
from tradebridge.tracking.tracker import Tracker


async def _marks_of(run: Any) -> bool:
    """Run ``run()`` in a task of its own until it reports its mark; return the mark."""
    seen: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(run(seen))
    mark = await asyncio.wait_for(seen, 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return mark


async def test_reconciles_rounds_run_as_background_work(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[asyncio.Future[bool]] = []

    async def round_(self: Reconciler) -> None:
        if not seen[0].done():
            seen[0].set_result(is_background())
        await asyncio.sleep(3600)

    monkeypatch.setattr(Reconciler, "reconcile_once", round_)
    reconciler = Reconciler(load_settings(), ledger=None, brokers=None)  # type: ignore[arg-type]

    async def run(future: asyncio.Future[bool]) -> None:
        seen.append(future)
        await reconciler.run()

    assert await _marks_of(run) is True
    assert is_background() is False  # the mark stays in reconcile's task


async def test_trackers_streams_run_as_background_work(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[asyncio.Future[bool]] = []

    class _Pool:
        async def brokers(self) -> list[tuple[str, object]]:
            return [("alice", object())]

        def tracking_key(self) -> str:
            return "tracker:test"

    class _Ledger:
        async def hold_lock(self, *_args: object, **_kw: object) -> None:
            await asyncio.sleep(3600)  # who is the tracker of record stays unknown

    async def follow(self: Tracker, name: str, broker: object, share: object) -> None:
        seen[0].set_result(is_background())
        await asyncio.sleep(3600)

    monkeypatch.setattr(Tracker, "_follow", follow)
    tracker = Tracker(load_settings(), ledger=_Ledger(), brokers=_Pool())  # type: ignore[arg-type]

    async def run(future: asyncio.Future[bool]) -> None:
        seen.append(future)
        await tracker.run()

    assert await _marks_of(run) is True
    assert is_background() is False
