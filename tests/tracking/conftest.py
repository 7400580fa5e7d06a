"""The dispatcher's rig: a fresh ledger database, the session Redis, an in-process simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from _support.database import fresh_database
from _support.fixtures import redis_client
from _support.native import UNLIMITED_BUDGET
from _support.rig import front, login
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.brokers.pool import BrokerPool
from tradebridge.config import (
    AccountConfig,
    DispatcherConfig,
    RetryConfig,
    RiskConfig,
    Settings,
    TradovateConfig,
    TvBridgeConfig,
)
from tradebridge.dispatch.dispatcher import Dispatcher
from tradebridge.domain.contracts import ContractSymbol
from tradebridge.domain.enums import Dialect
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import SimOrder
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedPostgres
from tradebridge.store.ledger import Ledger, LedgerRow
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client"]

ACCOUNT = "DEMO0000001"
ACCOUNT_2 = "DEMO0000002"
ACCOUNT_IDS = {ACCOUNT: 100001, ACCOUNT_2: 100002}
FAST_RETRY = RetryConfig(attempts=3, timeout_s=5, wait_initial_s=0, wait_max_s=0, wait_jitter_s=0)


@pytest.fixture
async def ledger_url(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """Create and migrate a database for one test; drop it afterwards."""
    async with fresh_database(postgres_server.url) as url:
        yield url


# The moves that bring an inserted (pending) row to a fixture's in-flight status.
_IN_FLIGHT_PATH: dict[str, tuple[str, ...]] = {
    "processing": ("processing",),
    "submitted": ("processing", "submitted"),
    "working": ("processing", "submitted", "working"),
}


@dataclass
class Stack:
    """Everything a dispatcher needs, on loopback."""

    sim: SimServer
    ledger: Ledger
    settings: Settings
    pool: BrokerPool
    redis: aioredis.Redis
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def dispatcher(self, worker_id: str = "w1", **kw: Any) -> Dispatcher:
        """Return a dispatcher on this stack."""
        return Dispatcher(self.settings, self.ledger, self.pool, worker_id=worker_id, **kw)

    def start(self, dispatcher: Dispatcher) -> asyncio.Task[None]:
        """Run ``dispatcher`` in the background for the rest of the test."""
        task = asyncio.create_task(dispatcher.run())
        self.tasks.append(task)
        return task

    async def insert(self, signal_id: str, **columns: Any) -> None:
        """Insert a row with the documented strategy column set (plus any extra column)."""
        values = {
            "signal_id": signal_id,
            "strategy_name": "tests",
            "instrument": front().name,
            "side": "buy",
            "order_type": "market",
            "quantity": 1,
            "account_name": ACCOUNT,
            **columns,
        }
        # A row is inserted pending (0013_inserted_pending); a fixture in flight is walked there.
        status = values.pop("status", "pending")
        path = _IN_FLIGHT_PATH.get(status, ())
        if not path:
            values["status"] = status
        names = ", ".join(values)
        marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
        async with self.ledger.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"insert into trading_signals ({names}) values ({marks})",
                *values.values(),
            )
            for step in path:
                await conn.execute(
                    "update trading_signals set status = $2 where signal_id = $1",
                    signal_id, step,
                )  # fmt: skip

    async def wait(self, signal_id: str, *statuses: str, timeout: float = 15.0) -> LedgerRow:
        """Wait until the row reaches one of ``statuses``; return it."""
        wanted = {SignalStatus(s) for s in statuses}
        deadline = asyncio.get_running_loop().time() + timeout
        row = None
        while asyncio.get_running_loop().time() < deadline:
            row = await self.ledger.get(signal_id)
            if row is not None and row.status in wanted:
                return row
            await asyncio.sleep(0.02)
        raise AssertionError(f"{signal_id} is {row.status if row else None}, not {statuses}")

    def sim_orders(self, account: str = ACCOUNT) -> list[SimOrder]:
        """Return the simulator's orders of ``account``."""
        return self.sim.call(lambda: self.sim.ctx.engine.orders(ACCOUNT_IDS[account]))

    def entries(self, account: str = ACCOUNT) -> list[SimOrder]:
        """Return the simulator's orders that are not bracket legs."""
        return [o for o in self.sim_orders(account) if o.parent_id is None]

    def last(self, contract: ContractSymbol | None = None) -> Decimal:
        """Return the simulator's last price."""

        def read() -> Decimal:
            found = self.sim.ctx.engine.find_contract((contract or front()).name)
            assert found is not None
            return self.sim.ctx.engine.quote(found.id).last

        return self.sim.call(read)

    def set_price(self, price: Decimal, contract: ContractSymbol | None = None) -> None:
        """Move the simulator's price (resting orders match)."""

        def move() -> None:
            found = self.sim.ctx.engine.find_contract((contract or front()).name)
            assert found is not None
            self.sim.ctx.engine.set_price(found.id, price)

        self.sim.call(move)

    def net_position(self, account: str = ACCOUNT) -> int:
        """Return the simulator's net position of ``account`` in the front month."""
        positions = self.sim.call(lambda: self.sim.ctx.engine.positions(ACCOUNT_IDS[account]))
        return sum(p.net_pos for p in positions)


StackFactory = Callable[..., Any]


def make_settings(sim_url: str, dialect: Dialect = Dialect.NATIVE, **sections: Any) -> Settings:
    """Return settings for the simulator with instant retries and short timers."""
    dispatcher = {
        "drain_interval_s": 0.2,
        "reconcile_interval_s": 0.5,
        "stale_after_s": 60,
        "lookup_backoff_s": 0.05,
        "lookup_backoff_max_s": 0.2,
        "event_retry_s": 0.1,
        "error_retry_s": 0.05,
        "error_retry_max_s": 0.2,
        # The session's server may have started a moment ago: no grace unless a test asks.
        "liveness_grace_s": 0.0,
        # A dead worker's rows move at once (their worker's sends: test_liveness_fence.py).
        "dead_worker_hold_s": 0.0,
        **sections.pop("dispatcher", {}),
    }
    tradovate = {
        "native_url": sim_url + "/v1",
        "bridge_url": sim_url,
        "retry": FAST_RETRY,
        "request_timeout_s": 2,
        **UNLIMITED_BUDGET,
        "lookup_absent_after_s": 0.3,
        **sections.pop("tradovate", {}),
    }
    tvbridge = {
        "bid_ask": "never",
        "poll_interval_s": 0.1,
        "lookup_poll_s": 0.05,
        **sections.pop("tvbridge", {}),
    }
    return Settings(
        accounts=[AccountConfig(name=a, user="demo", dialect=dialect)
                  for a in (ACCOUNT, ACCOUNT_2)],
        tradovate=TradovateConfig(**tradovate),
        tvbridge=TvBridgeConfig(**tvbridge),
        dispatcher=DispatcherConfig(**dispatcher),
        # Any hour: the trading window is tested with the clock set (test_risk_rules.py).
        risk=RiskConfig(**{"trading_hours": "always", **sections.pop("risk", {})}),
        **sections,
    )  # fmt: skip


@pytest.fixture
def make_stack(ledger_url: str, redis_client: aioredis.Redis) -> StackFactory:
    """Return ``make_stack(sim_config=None, dialect=NATIVE, clock=None, **settings_sections)``
    (an async context manager; ``clock`` is the simulator's)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def make(
        sim_config: SimConfig | None = None,
        dialect: Dialect = Dialect.NATIVE,
        clock: Clock | None = None,
        **sections: Any,
    ) -> AsyncIterator[Stack]:
        with SimServer(sim_config or SimConfig(port=0), clock=clock) as sim:
            value = await login(sim, dialect)
            for name in (ACCOUNT, ACCOUNT_2):
                await redis_client.set(f"token:{name}", value)
            settings = make_settings(sim.url, dialect, **sections)
            ledger = await Ledger.connect(ledger_url, min_size=1, max_size=12)
            pool = BrokerPool(settings, TokenStore(redis_client, settings.tokens))
            stack = Stack(sim, ledger, settings, pool, redis_client)
            try:
                yield stack
            finally:
                for task in stack.tasks:
                    task.cancel()
                await asyncio.gather(*stack.tasks, return_exceptions=True)
                await pool.close()
                await ledger.close()

    return make


@pytest.fixture
async def stack(make_stack: StackFactory) -> AsyncIterator[Stack]:
    """Return the default stack."""
    async with make_stack() as built:
        yield built


Waiter = Callable[[], Awaitable[None]]


class FedStream:
    """A broker's event stream fed by the test (only ``events()`` is asked of a broker)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[BrokerOrderEvent] = asyncio.Queue()

    async def events(self) -> AsyncIterator[BrokerOrderEvent]:
        while True:
            yield await self.queue.get()


async def until(done: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Return once ``done()``; fail the test with ``what`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {timeout:g} s: {what}")
