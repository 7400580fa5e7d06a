"""A worker whose pooled ledger connections die silently must not strand its rows.

A live worker keeps its rows however old (reconcile never takes them: docs/dispatcher.md), so
every statement of a live worker has to end. The pool's connections stay open through quiet
spells (``database.min_pool`` unset keeps the whole pool), and a middlebox's idle timeout
(a NAT gateway, a load balancer) can drop such a connection without a word to the client,
while the liveness lock's connection, probed every two seconds, never idles and stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

from tracking.conftest import ACCOUNT, StackFactory
from tradebridge.brokers.pool import BrokerPool
from tradebridge.dispatch import reconcile as reconcile_module
from tradebridge.dispatch.dispatcher import Dispatcher
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.store.ledger import Ledger
from tradebridge.store.tokens import TokenStore

# Sessions the proxy never cuts: their own probes keep them from idling out.
_PROBED = (b"tradebridge-liveness", b"tradebridge-listener")


class CuttingProxy:
    """A TCP proxy to PostgreSQL that can drop its pooled connections silently: the server
    side is closed (the session ends, its locks go), the client side stays open and hears
    nothing more, as after a middlebox forgot the connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._cuttable: list[tuple[asyncio.Event, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.listen_port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> int:
        """Drop every pooled connection open now; return how many."""
        for cut, upstream in self._cuttable:
            cut.set()
            upstream.close()
        count = len(self._cuttable)
        self._cuttable.clear()
        return count

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
            length = await reader.readexactly(4)
            startup = length + await reader.readexactly(int.from_bytes(length, "big") - 4)
            up_writer.write(startup)
            cut = asyncio.Event()
            if not any(name in startup for name in _PROBED):
                self._cuttable.append((cut, up_writer))

            async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                while data := await src.read(65536):
                    if not cut.is_set():
                        dst.write(data)
                        with contextlib.suppress(ConnectionError):
                            await dst.drain()
                # Cut: the client's side is left open, silent.

            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer),
                                 return_exceptions=True)  # fmt: skip
            if cut.is_set():
                await asyncio.Event().wait()  # never answer, never close
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
            if up_writer is not None:
                with contextlib.suppress(Exception):
                    up_writer.close()


@contextlib.asynccontextmanager
async def cutting_proxy(url: str) -> AsyncIterator[tuple[CuttingProxy, str]]:
    parts = urlsplit(url)
    proxy = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{proxy.listen_port}"
    query = (parts.query + "&" if parts.query else "") + "sslmode=disable"
    try:
        yield proxy, urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    finally:
        await proxy.close()


@pytest.mark.timeout(240)
async def test_a_worker_whose_pool_connections_die_silently_does_not_strand_its_row(
    make_stack: StackFactory, ledger_url: str, redis_client: aioredis.Redis
) -> None:
    # Process 1 (w1) claims a row and writes its write-ahead; its order is held a moment
    # before it leaves. Meanwhile its idle pooled connections are dropped silently (its
    # liveness lock's connection, probed, stays up). The order is accepted by the broker;
    # w1's answer write goes out on a dead connection. Process 2 (w2: dispatcher, tracker,
    # reconcile) runs throughout. The row must leave `submitted` in bounded time: the
    # order rests at the broker and nothing else can place the account's next rows.
    async with make_stack() as stack, cutting_proxy(ledger_url) as (proxy, proxied):
        ledger = await Ledger.connect(proxied, min_size=6, max_size=6, statement_timeout_s=3)
        pool = BrokerPool(stack.settings, TokenStore(redis_client, stack.settings.tokens))
        entered, release = asyncio.Event(), asyncio.Event()
        broker = await pool.get(ACCOUNT)
        real_submit = broker.submit

        async def submit(command: Any) -> Any:
            entered.set()
            await release.wait()
            return await real_submit(command)

        broker.submit = submit  # type: ignore[method-assign]
        w1 = Dispatcher(stack.settings, ledger, pool, worker_id="w1")
        w1_task = asyncio.create_task(w1.run())
        try:
            with pytest.MonkeyPatch.context() as patch:
                # Two processes: neither's workers are the other's own.
                patch.setattr(reconcile_module, "local_workers", frozenset)
                await asyncio.wait_for(w1.live.wait(), 10)
                far = stack.last() - Decimal(200)
                await stack.insert("sp", order_type="limit", price=far)
                await asyncio.wait_for(entered.wait(), 15)
                assert proxy.cut() > 0
                release.set()
                w2 = stack.dispatcher("w2")
                stack.start(w2)
                await stack.wait("sp", "submitted", timeout=5)
                # Bounded: the row leaves `submitted` (placed once, or recovered and looked
                # up) rather than holding its account for good.
                row = await stack.wait("sp", "working", "unknown", "needs_review", "failed",
                                       timeout=45)  # fmt: skip
                assert row.status is not SignalStatus.SUBMITTED
                assert [o.cl_ord_id for o in stack.entries()] in (["tb-sp"], [])
        finally:
            w1_task.cancel()
            ledger.pool.terminate()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(w1_task, 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)
