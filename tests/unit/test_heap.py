"""The long-running commands freeze their start-up heap once serving (``_heap.py``), so the
collector's full passes walk only what serving created."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tradebridge._net import bind_socket
from tradebridge.sim.config import SimConfig
from tradebridge.sim.server import serve


def test_freeze_moves_the_heap_out_of_the_collectors_sight() -> None:
    code = (
        "import gc; from tradebridge._heap import freeze_startup_heap; "
        "before = gc.get_freeze_count(); freeze_startup_heap(); "
        "print(before, gc.get_freeze_count())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    before, after = map(int, done.stdout.split())
    assert before == 0
    assert after > 1_000  # the interpreter and what it imported


@pytest.fixture
def uvicorn_logging() -> Iterator[None]:
    """Put back the loggers uvicorn's log config changes (the simulator applies it)."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled)
             for lg in map(logging.getLogger, names)]  # fmt: skip
    yield
    for lg, handlers, level, propagate, disabled in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


@pytest.mark.usefixtures("uvicorn_logging")
async def test_the_simulator_calls_ready_once_it_serves() -> None:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    ready = asyncio.Event()

    task = asyncio.create_task(serve(SimConfig(port=port), sock=sock, ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"http://127.0.0.1:{port}/v1/auth/accesstokenrequest",
                                       json={}, timeout=10)  # fmt: skip
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
    assert answer.status_code == 400  # it answers: a login without a name is refused
