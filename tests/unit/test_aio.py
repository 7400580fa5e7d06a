"""Cancellation survives the helpers that tear child tasks down."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tradebridge._aio import cancel_and_wait, reraise_if_cancelling, start_in_thread


async def _forever() -> None:
    await asyncio.Event().wait()


async def _fails() -> None:
    raise RuntimeError("boom")


async def test_cancel_and_wait_ends_children_and_absorbs_their_failures() -> None:
    child = asyncio.create_task(_forever())
    broken = asyncio.create_task(_fails())
    await asyncio.sleep(0)
    await cancel_and_wait(child, broken, None)
    assert child.cancelled()
    assert broken.done()


async def test_cancel_and_wait_keeps_the_callers_cancellation() -> None:
    started = asyncio.Event()

    async def parent() -> None:
        child = asyncio.create_task(_forever())
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            await cancel_and_wait(child)  # the parent is being cancelled here

    task = asyncio.create_task(parent())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_reraise_if_cancelling_stops_a_loop_whose_library_converted_the_cancel() -> None:
    reraise_if_cancelling()  # not being cancelled: nothing happens
    rounds = 0

    async def library_call() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as e:  # a library that translates everything
            raise RuntimeError("connection closed") from e

    async def retry_loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            try:
                await library_call()
            except Exception:  # noqa: BLE001 - the loop under test retries everything
                reraise_if_cancelling()

    task = asyncio.create_task(retry_loop())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert rounds == 1


async def _loses_its_first_cancel(lost: asyncio.Event) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        lost.set()  # as Python 3.11's wait_for does when the answer races the cancel
    await asyncio.Event().wait()  # the next round: waits, still "cancelling"


async def test_cancel_and_wait_cancels_again_a_child_that_lost_its_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost = asyncio.Event()
    child = asyncio.create_task(_loses_its_first_cancel(lost), name="losing-child")
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(child, again_after_s=0.05), 10)
    assert lost.is_set()
    assert child.cancelled()
    assert "losing-child" in caplog.text


async def test_reraise_if_cancelling_before_a_pause_stops_a_loop_whose_round_lost_the_cancel() -> (
    None
):
    rounds = 0

    async def loses_the_cancel() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return  # the answer "arrived" with the cancel: returned, cancel lost

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await loses_the_cancel()
            reraise_if_cancelling()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert rounds == 1


async def test_start_in_thread_cancelled_midway_stops_what_the_start_started() -> None:
    # A thread cannot be cancelled: an embedded server's start goes on after the await is
    # cancelled, and must be stopped once it ends, not left running with nobody to stop it.
    entered, release = threading.Event(), threading.Event()
    running: list[str] = []

    def start() -> str:
        entered.set()
        release.wait(10)
        running.append("server")
        return "server"

    task = asyncio.create_task(start_in_thread(start, running.clear))
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    await asyncio.sleep(0)  # the cancellation is delivered while the start still runs
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert running == []  # started, then stopped


async def test_start_in_thread_returns_the_start_and_leaves_a_failed_one_alone() -> None:
    stopped: list[bool] = []
    assert await start_in_thread(lambda: 7, lambda: stopped.append(True)) == 7

    def failing() -> int:
        raise OSError("address in use")

    with pytest.raises(OSError, match="address in use"):
        await start_in_thread(failing, lambda: stopped.append(True))
    assert stopped == []
