"""Run the simulator: in a background thread (tests, embedded setup) or in the foreground (CLI).

``SimServer`` binds its socket before the server thread starts, so ``port=0`` picks a free
port without races, and ``start`` returns only once the server accepts connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

import uvicorn
from fastapi import FastAPI

from tradebridge._aio import cancel_and_wait
from tradebridge._net import bind_socket
from tradebridge.sim.app import build_app
from tradebridge.sim.clock import Clock, SystemClock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.context import SimContext
from tradebridge.sim.faults import DroppedAnswerLogFilter

T = TypeVar("T")

# uvicorn's own "websockets" implementation uses the legacy API of websockets, which
# websockets >= 14 deprecates; the sans-I/O one uses the current API and warns nothing.
_WS_IMPL = "websockets-sansio"
_START_TIMEOUT_S = 10.0
# Requests still running at stop (a "hang" fault, a slow client) get this long.
_GRACEFUL_SHUTDOWN_S = 2


def _uvicorn_config(app: FastAPI, config: SimConfig, *, log_config: bool) -> uvicorn.Config:
    _quiet_dropped_answers()
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        ws=_WS_IMPL,
        lifespan="on",
        access_log=False,
        log_config=uvicorn.config.LOGGING_CONFIG if log_config else None,
        log_level="warning",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )


def _quiet_dropped_answers() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DroppedAnswerLogFilter) for f in logger.filters):
        logger.addFilter(DroppedAnswerLogFilter())


class _ThreadServer(uvicorn.Server):
    """A uvicorn server whose stop is an event, not a flag polled every 0.1 s."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stop_requested = asyncio.Event()

    async def main_loop(self) -> None:
        """Wait for a stop; wake once a second for uvicorn's housekeeping (Date header)."""
        counter = 0
        while not await self.on_tick(counter):
            counter += 10  # on_tick counts tenths of a second
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), timeout=1.0)
            if self.stop_requested.is_set():
                return


class SimServer:
    """A simulator served by uvicorn in a background thread."""

    def __init__(self, config: SimConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.ctx = SimContext.build(self.config, self.clock)
        self.url = ""
        self.ws_url = ""
        self._server: _ThreadServer | None = None
        self._thread: threading.Thread | None = None
        self._app: FastAPI | None = None

    def start(self) -> Self:
        """Start serving and return once the server accepts connections."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        sock = bind_socket(self.config.host, self.config.port)
        host, port = sock.getsockname()[:2]
        self._app = build_app(self.ctx)
        server = _ThreadServer(_uvicorn_config(self._app, self.config, log_config=False))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sim-server", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                self._server = self._thread = None
                raise RuntimeError("the simulator did not start")
            time.sleep(0.002)
        self.url = f"http://{host}:{port}"
        self.ws_url = f"ws://{host}:{port}/v1/websocket"
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        loop = self._loop()
        server.should_exit = True
        if loop is not None and self._app is not None:
            # Release answers held by a "hang" fault before uvicorn waits for them.
            closing: asyncio.Event = self._app.state.closing
            loop.call_soon_threadsafe(closing.set)
            loop.call_soon_threadsafe(server.stop_requested.set)
        thread.join(timeout=_GRACEFUL_SHUTDOWN_S + 10)
        self._server = self._thread = None

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the server's event loop (the engine is not thread-safe) and return."""
        loop = self._loop()
        if loop is None:
            raise RuntimeError("the simulator is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=timeout)

    def _loop(self) -> asyncio.AbstractEventLoop | None:
        server = self._server
        if server is None or not server.started or not server.servers:
            return None
        return server.servers[0].get_loop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def serve(
    config: SimConfig,
    clock: Clock | None = None,
    ctx: SimContext | None = None,
    sock: socket.socket | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve the simulator in the foreground until interrupted (``tradebridge sim``).

    The CLI binds ``sock`` itself before it writes tokens to Redis, so a simulator that
    cannot start never overwrites the tokens of one that is running. ``ready`` is called
    once it serves.
    """
    if ctx is None:  # the CLI passes its own, to seed tokens from the same state
        ctx = SimContext.build(config, clock if clock is not None else SystemClock())
    server = uvicorn.Server(_uvicorn_config(build_app(ctx), config, log_config=True))
    if sock is None:
        sock = bind_socket(config.host, config.port)

    async def when_started(call: Callable[[], None]) -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes its start only as a flag
            await asyncio.sleep(0.01)
        call()

    watcher = None if ready is None else asyncio.create_task(when_started(ready))
    try:
        await server.serve(sockets=[sock])
    finally:
        await cancel_and_wait(watcher)
