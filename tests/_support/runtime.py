"""Helpers of the runtime and chaos tests: processes, reachable temporary directories, an
in-process ``serve``, and the fixtures of a fresh database and a simulator."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from _support.database import fresh_database
from tradebridge.sim.config import SimConfig
from tradebridge.sim.seed import TokenSeeder
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis

TRADEBRIDGE = str(Path(sys.executable).parent / "tradebridge")


@contextmanager
def reachable_tmp_dir(prefix: str) -> Iterator[Path]:
    """Yield a temporary directory the postgres user can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Proc:
    """A child process whose output goes to a log file, stopped at the end of a test."""

    def __init__(
        self, args: list[str], log: Path, env: Mapping[str, str | None] | None = None
    ) -> None:
        self.args = args
        self.log = log
        self._handle = log.open("ab")
        full_env = child_env(env or {})
        self.popen = subprocess.Popen(
            args, stdout=self._handle, stderr=subprocess.STDOUT, env=full_env, cwd="/"
        )

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Return whether the process still runs."""
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the process still runs."""
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the exit code."""
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        """Terminate (then kill) the process and close its log."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._handle.close()

    def output(self) -> str:
        """Return what the process wrote so far."""
        return self.log.read_text(errors="replace")


def child_env(changes: Mapping[str, str | None]) -> dict[str, str]:
    """Return this process's environment with ``changes`` (``None`` removes a variable)."""
    out = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


# The user's settings must not leak into the tests' children.
NO_SETTINGS: dict[str, str | None] = {
    "DATABASE_URL": None,
    "REDIS_URL": None,
    "TRADEBRIDGE_CONFIG": None,
}


# --- in-process `serve` on the simulator -----------------------------------------------------


def serve_settings(
    sim: Any, database: str, redis: str, data_dir: Path, *, secret: str, **sections: Any
) -> Any:
    """Return ``serve`` settings for the simulator's accounts on these stores (port 0)."""
    from tradebridge.config import load_settings
    from tradebridge.runtime.up import simulator_settings

    serve = {"port": 0, "migrate_on_start": False, **sections.pop("serve", {})}
    base = load_settings(
        database={"url": database},
        redis={"url": redis},
        data_dir=data_dir,
        serve=serve,
        webhook={"secret": secret},
        **sections,
    )
    return simulator_settings(base, sim.url, sim.config.users)


@asynccontextmanager
async def serving(settings: Any) -> AsyncIterator[Any]:
    """Run ``run_serve`` in this loop until the block ends; yield its ``Endpoints``."""
    from tradebridge.runtime.endpoints import Endpoints
    from tradebridge.runtime.serve import run_serve

    stop = asyncio.Event()
    found: asyncio.Future[Endpoints] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_serve(settings, stop=stop, ready=found.set_result))
    done, _ = await asyncio.wait({task, found}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises what stopped it
    assert found in done, "run_serve did not become ready"
    try:
        yield found.result()
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=30)
        if not done:
            # A serve that does not stop: name what it waits for, rather than hang until the
            # test's timeout with only the threads' stacks to show.
            stuck = _task_stacks()
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            raise AssertionError(f"run_serve did not stop within 30 s; its tasks:\n{stuck}")
        task.result()


def _task_stacks() -> str:
    """Return every live task of this loop with where it waits (for a stuck shutdown)."""
    out = []
    for one in asyncio.all_tasks():
        if one is asyncio.current_task():
            continue
        buffer = io.StringIO()
        one.print_stack(limit=8, file=buffer)
        out.append(f"--- {one.get_name()}: {one.get_coro()!r}\n{buffer.getvalue()}")
    return "\n".join(out)


async def until_final(ledger: Any, signal_id: str, timeout: float = 20) -> Any:
    """Wait until the row is final; return it."""
    from tradebridge.domain.lifecycle import FINAL_STATUSES

    async with asyncio.timeout(timeout):
        while True:
            row = await ledger.get(signal_id)
            assert row is not None
            if row.status in FINAL_STATUSES:
                return row
            await asyncio.sleep(0.05)


# --- fixtures (re-exported by the conftest files that use them) --------------------------


@pytest.fixture
async def fresh_db(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """Create a migrated database for one test; drop it afterwards."""
    async with fresh_database(postgres_server.url, prefix="rt") as url:
        yield url


@pytest.fixture
def sim() -> Iterator[SimServer]:
    """Run an in-process simulator on a free port."""
    server = SimServer(SimConfig(port=0)).start()
    yield server
    server.stop()


@pytest.fixture
async def sim_tokens(sim: SimServer, redis_server: EmbeddedRedis) -> AsyncIterator[SimServer]:
    """Write the simulator users' tokens into the session Redis (emptied first)."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    # Once, before any traffic: the seeder touches only the simulator's token table.
    await TokenSeeder(sim.ctx, client).seed()
    yield sim
    await client.aclose()
