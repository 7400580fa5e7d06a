"""Several Tradovate users in one install: each its own login, token, adapter, budget, lockout.

The simulator's users are the test's own (``_support/users.py``, minted passwords); the
settings name them in ``[[users]]`` and read the passwords from the environment, as a
deployment would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from _support.fixtures import redis_client
from _support.native import FAST_RETRY, UNLIMITED_BUDGET, front, order
from _support.users import ALICE, BOB, SIM_IDS, bridge_id, passwords, users_sim
from tradebridge.brokers.auth import AccountTokens, BridgeTokenManager, TokenManager
from tradebridge.brokers.budget import BudgetLimits, RequestBudget, UserBudget
from tradebridge.brokers.factory import build_account_tokens
from tradebridge.brokers.http import BrokerCall
from tradebridge.brokers.pool import BrokerPool
from tradebridge.brokers.tradovate import TradovateBroker
from tradebridge.config import Settings, load_settings
from tradebridge.errors import BridgeError, Lockout
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis

__all__ = ["passwords", "redis_client", "users_sim"]  # fixtures


@pytest.fixture
def sim(
    users_sim: SimServer, passwords: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> SimServer:
    """The simulator of alice and bob, their passwords where ``[[users]]`` reads them."""
    for name, password in passwords.items():
        monkeypatch.setenv(f"TRADEBRIDGE_USER_{name.upper()}_PASSWORD", password)
    return users_sim


def _settings(sim: SimServer, tmp_path: Path, bob_dialect: str = "native") -> Settings:
    bob: dict[str, Any] = {"name": BOB, "dialect": bob_dialect, "user": "bob"}
    if bob_dialect == "tvbridge":
        bob["bridge_id"] = bridge_id(BOB)
    return load_settings(
        data_dir=tmp_path,
        tradovate={
            "native_url": f"{sim.url}/v1", "bridge_url": sim.url, "ws_url": "",
            **UNLIMITED_BUDGET, "retry": FAST_RETRY.model_dump(),
        },
        users=[{"name": "alice", "app_id": "tests"}, {"name": "bob", "dialect": bob_dialect}],
        accounts=[{"name": ALICE[0], "user": "alice"}, {"name": ALICE[1], "user": "alice"}, bob],
    )  # fmt: skip


class RecordingBudget(RequestBudget):
    """A request budget that remembers which user each request was counted against."""

    def __init__(self) -> None:
        super().__init__(BudgetLimits.unlimited())
        self.keys: list[str] = []

    def bucket(self, key: str) -> UserBudget:
        self.keys.append(key)
        return super().bucket(key)


@pytest.fixture
async def open_pool(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> AsyncIterator[Callable[..., tuple[AccountTokens, BrokerPool]]]:
    """Return ``open_pool(settings, budget=None)``: one process's tokens and adapters."""
    opened: list[tuple[aioredis.Redis, AccountTokens, BrokerPool]] = []

    def open_(
        settings: Settings, budget: RequestBudget | None = None
    ) -> tuple[AccountTokens, BrokerPool]:
        client = aioredis.Redis.from_url(redis_server.url)
        tokens = build_account_tokens(settings, client, budget=budget)
        pool = BrokerPool(settings, tokens)
        opened.append((client, tokens, pool))
        return tokens, pool

    yield open_
    for client, tokens, pool in opened:
        await pool.close()
        await tokens.aclose()
        await client.aclose()


def _sim_accounts_of(sim: SimServer, order_ids: list[str]) -> list[int]:
    """Return the simulator account of each order id, in order."""

    def read() -> dict[str, int]:
        return {str(o.id): o.account_id for o in sim.ctx.engine.orders()}

    accounts = sim.call(read)
    return [accounts[order_id] for order_id in order_ids]


async def _stored(redis_client: aioredis.Redis, account: str) -> dict[str, Any]:
    raw = await redis_client.get(f"token:{account}")
    assert raw is not None, f"no token under token:{account}"
    stored: dict[str, Any] = json.loads(raw)
    return stored


async def test_two_native_users_each_account_gets_its_users_token_and_orders(
    sim: SimServer,
    tmp_path: Path,
    redis_client: aioredis.Redis,
    open_pool: Callable[..., tuple[AccountTokens, BrokerPool]],
) -> None:
    tokens, pool = open_pool(_settings(sim, tmp_path))
    names = [*ALICE, BOB]

    placed = []
    for i, name in enumerate(names):
        broker = await pool.get(name)
        placed.append(await broker.submit(order(f"tb-users-{i}", account=name)))

    assert _sim_accounts_of(sim, placed) == [SIM_IDS[name] for name in names]
    alice = [await _stored(redis_client, name) for name in ALICE]
    bob = await _stored(redis_client, BOB)
    assert [t["userId"] for t in (*alice, bob)] == [31, 31, 42]
    assert alice[0]["accessToken"] == alice[1]["accessToken"] != bob["accessToken"]
    assert sim.ctx.auth.logins == 2  # one per user, not per account
    managers = {name: tokens.managers[name] for name in names}
    assert managers[ALICE[0]] is managers[ALICE[1]] is not managers[BOB]
    assert [m.lock_key for m in tokens.distinct_managers()] == [
        "lock:token:alice",
        "lock:token:bob",
    ]
    assert await pool.get(ALICE[0]) is await pool.get(ALICE[1])
    assert await pool.get(ALICE[0]) is not await pool.get(BOB)


async def test_native_and_bridge_users_each_log_in_their_dialect_and_place(
    sim: SimServer,
    tmp_path: Path,
    redis_client: aioredis.Redis,
    open_pool: Callable[..., tuple[AccountTokens, BrokerPool]],
) -> None:
    tokens, pool = open_pool(_settings(sim, tmp_path, bob_dialect="tvbridge"))

    placed = [
        await (await pool.get(name)).submit(order(f"tb-mixed-{i}", account=name))
        for i, name in enumerate((ALICE[0], BOB))
    ]

    assert _sim_accounts_of(sim, placed) == [SIM_IDS[ALICE[0]], SIM_IDS[BOB]]
    assert isinstance(tokens.managers[ALICE[0]], TokenManager)
    assert isinstance(tokens.managers[BOB], BridgeTokenManager)
    assert (await _stored(redis_client, ALICE[0]))["kind"] == "native"
    assert (await _stored(redis_client, BOB))["kind"] == "tv"


async def test_request_budget_one_bucket_per_user_shared_by_logins_and_accounts(
    sim: SimServer,
    tmp_path: Path,
    open_pool: Callable[..., tuple[AccountTokens, BrokerPool]],
) -> None:
    budget = RecordingBudget()
    _tokens, pool = open_pool(_settings(sim, tmp_path), budget)

    for i, name in enumerate(ALICE):
        await (await pool.get(name)).submit(order(f"tb-budget-a{i}", account=name))
    alice_keys, budget.keys = budget.keys, []
    await (await pool.get(BOB)).submit(order("tb-budget-b", account=BOB))

    assert set(alice_keys) == {"alice"}  # the login and both accounts' requests
    assert len(alice_keys) >= 3
    assert set(budget.keys) == {"bob"}
    assert budget.bucket("alice") is not budget.bucket("bob")


async def test_one_users_lockout_leaves_the_other_user_trading(
    sim: SimServer,
    tmp_path: Path,
    open_pool: Callable[..., tuple[AccountTokens, BrokerPool]],
) -> None:
    sim.ctx.faults.lockout_429_users = ["bob"]
    tokens, pool = open_pool(_settings(sim, tmp_path))

    with pytest.raises(BridgeError):  # HTTP 429: Tradovate locked bob out
        await (await pool.get(BOB)).submit(order("tb-lock-b", account=BOB))
    await tokens.lockouts.flush()
    placed = await (await pool.get(ALICE[0])).submit(order("tb-lock-a", account=ALICE[0]))

    assert _sim_accounts_of(sim, [placed]) == [SIM_IDS[ALICE[0]]]
    assert await tokens.lockouts.current("bob") is not None
    assert await tokens.lockouts.current("alice") is None
    with pytest.raises(Lockout, match="bob is locked out"):
        await tokens.token(BOB)


async def _alices_calls(
    pool: BrokerPool,
) -> tuple[BrokerPool, TradovateBroker, list[BrokerCall]]:
    """Return the pool, ALICE's adapter, and the list its broker calls go to from now on."""
    calls: list[BrokerCall] = []
    broker = await pool.get(ALICE[0])
    assert isinstance(broker, TradovateBroker)
    broker.http.add_listener(calls.append)
    return pool, broker, calls


async def test_pool_fanout_of_one_user_lists_its_accounts_once(
    sim: SimServer,
    tmp_path: Path,
    open_pool: Callable[..., tuple[AccountTokens, BrokerPool]],
) -> None:
    pool, _broker, calls = await _alices_calls(open_pool(_settings(sim, tmp_path))[1])

    infos = await asyncio.gather(*(pool.account_info(ALICE[i % 2]) for i in range(20)))

    assert [i.name for i in infos if i is not None] == [ALICE[i % 2] for i in range(20)]
    assert [c.path for c in calls if c.path.startswith("/account/")] == ["/account/list"]


async def test_pool_warm_lists_each_user_before_the_first_order(
    sim: SimServer,
    tmp_path: Path,
    open_pool: Callable[..., tuple[AccountTokens, BrokerPool]],
) -> None:
    pool, broker, calls = await _alices_calls(open_pool(_settings(sim, tmp_path))[1])

    await pool.warm()
    warmed = len(calls)
    await pool.account_info(ALICE[1])
    await broker.account_id(ALICE[1])

    assert [c.path for c in calls].count("/account/list") == 1
    assert len(calls) == warmed  # the order path found everything cached


async def test_pool_preconnect_opens_one_connection_per_account_about_to_send(
    sim: SimServer,
    tmp_path: Path,
    open_pool: Callable[..., tuple[AccountTokens, BrokerPool]],
) -> None:
    pool = open_pool(_settings(sim, tmp_path))[1]
    for name in (*ALICE, BOB):
        await pool.get(name)
    server = sim._server  # the simulator's uvicorn server holds its open connections
    assert server is not None
    before = len(server.server_state.connections)

    # An account not configured has no adapter: skipped, the others still connect.
    await pool.preconnect([*ALICE, BOB, "NOT-OURS"])
    deadline = time.monotonic() + 5.0
    while len(server.server_state.connections) < before + 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)

    assert len(server.server_state.connections) - before == 3


async def test_pool_warm_looks_up_recent_contracts_once_per_user_and_skips_expired_ones(
    sim: SimServer,
    tmp_path: Path,
    open_pool: Callable[..., tuple[AccountTokens, BrokerPool]],
) -> None:
    pool, broker, calls = await _alices_calls(open_pool(_settings(sim, tmp_path))[1])
    current = front().name
    month = front().month - 3
    expired = replace(front(), year=front().year - (month < 1), month=(month - 1) % 12 + 1)

    # What the ledger says ALICE's accounts traded lately (an expired month among it, and
    # an account not configured here).
    await pool.warm(
        {ALICE[0]: [current, expired.tradingview_name], ALICE[1]: [current], "NOT-OURS": ["ESZ9"]}
    )
    finds = [c.path for c in calls if c.path.startswith("/contract/")]
    await broker.submit(order("tb-after-warm", account=ALICE[1]))

    assert finds == [f"/contract/find?name={current}"]
    assert [c.path for c in calls if c.path.startswith("/contract/")] == finds


def test_tracking_key_names_the_streams_alike_in_every_process_configured_alike(
    sim: SimServer, tmp_path: Path, open_pool: Callable[..., tuple[AccountTokens, BrokerPool]]
) -> None:
    # The tracker of record's lock is named by the streams a process follows (Tracker.run).
    settings = _settings(sim, tmp_path)
    _, pool = open_pool(settings)
    _, again = open_pool(settings)
    reordered = settings.model_copy(update={"accounts": settings.accounts[::-1]})
    _, shuffled = open_pool(reordered)
    fewer = settings.model_copy(update={"accounts": settings.accounts[1:]})
    _, other = open_pool(fewer)
    as_bridge = _settings(sim, tmp_path, bob_dialect="tvbridge")
    _, bridged = open_pool(as_bridge)

    assert pool.tracking_key() == again.tracking_key() == shuffled.tracking_key()
    assert other.tracking_key() != pool.tracking_key()  # serves fewer of alice's accounts
    assert bridged.tracking_key() != pool.tracking_key()  # bob's stream is another dialect's
