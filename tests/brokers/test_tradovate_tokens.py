"""TradovateBroker with self-managed tokens: expiry and renewal in the middle of a run."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from _support.native import ACCOUNT, ACCOUNT_ID, ACCOUNTS, native_config, order, redis_client, sim
from tradebridge.brokers.auth import TokenManager
from tradebridge.brokers.http import BrokerCall, BrokerHttp
from tradebridge.brokers.tradovate import TradovateBroker
from tradebridge.config import NativeCredentials, TokenConfig
from tradebridge.errors import AuthError, OutcomeUnknown
from tradebridge.sim.clock import Clock, ManualClock
from tradebridge.sim.server import SimServer
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client", "sim"]  # fixtures


@pytest.fixture
def sim_clock() -> Clock:
    """Return a clock the test moves: the simulator's tokens expire when told to."""
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def managed(
    sim: SimServer, redis_client: aioredis.Redis
) -> AsyncIterator[tuple[TradovateBroker, TokenManager, list[BrokerCall]]]:
    """Return a broker whose tokens a ``TokenManager`` obtains and renews."""
    config = native_config(sim)
    http = BrokerHttp(config.native_url, dialect="native")
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)
    manager = TokenManager(
        TokenStore(redis_client, TokenConfig()), http,
        NativeCredentials(name="demo", password="demo", app_id="tests"),
        device_id="tests-device", account_names=[a.name for a in ACCOUNTS],
        retry=config.retry,
    )  # fmt: skip
    broker = TradovateBroker(config, ACCOUNTS, manager, http=http)
    yield broker, manager, calls
    await broker.close()
    await http.aclose()


async def test_token_expired_at_broker_mid_run_relogin_lookup_then_order_placed_once(
    sim: SimServer,
    sim_clock: ManualClock,
    managed: tuple[TradovateBroker, TokenManager, list[BrokerCall]],
) -> None:
    broker, manager, calls = managed
    first = await broker.submit(order("tb-before"))
    sim_clock.advance(3 * 3600)  # the broker's session ends; our clock still calls it valid
    ts_sent = datetime.now(UTC)

    # A 401 to an order is looked up before anything is resent (reference §6.3).
    with pytest.raises(OutcomeUnknown, match="renewed"):
        await broker.submit(order("tb-after"))
    assert (await broker.lookup(order("tb-after"), ts_sent)).absent
    second = await broker.submit(order("tb-after"))

    orders = sim.call(lambda: sim.ctx.engine.orders(ACCOUNT_ID))
    assert [str(o.id) for o in orders] == [first, second]
    assert [o.cl_ord_id for o in orders] == ["tb-before", "tb-after"]
    statuses = [c.status for c in calls if c.path == "/order/placeorder"]
    assert statuses == [200, 401, 200]
    assert manager.logins == 2


async def test_token_near_expiry_renewed_before_use_no_new_session(
    sim: SimServer,
    redis_client: aioredis.Redis,
    managed: tuple[TradovateBroker, TokenManager, list[BrokerCall]],
) -> None:
    broker, manager, calls = managed
    await broker.submit(order("tb-one"))
    stored = json.loads(await redis_client.get(f"token:{ACCOUNT}"))
    stored["obtainedAt"] = (datetime.now(UTC) - timedelta(hours=6)).isoformat()  # 82 % of life
    await redis_client.set(f"token:{ACCOUNT}", json.dumps(stored))
    manager.store.invalidate(ACCOUNT)

    await broker.submit(order("tb-two"))

    assert manager.renewals == 1
    assert manager.logins == 1
    assert sim.ctx.auth.logins == 1
    assert [c.status for c in calls if c.path == "/order/placeorder"] == [200, 200]


async def test_token_refused_on_submit_no_newer_unknown_then_auth_error_before_sending(
    sim: SimServer,
    redis_client: aioredis.Redis,
    sim_clock: ManualClock,
) -> None:
    from _support.native import login_json

    config = native_config(sim)
    await redis_client.set(f"token:{ACCOUNT}", await login_json(sim))
    http = BrokerHttp(config.native_url, dialect="native")
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)
    broker = TradovateBroker(config, ACCOUNTS, TokenStore(redis_client, TokenConfig()), http=http)
    await broker.connect()
    await broker.resolve_contract("MNQ1!", ACCOUNT)
    sim_clock.advance(3 * 3600)

    try:
        # Sent and answered 401: it may exist, whatever the renewal says (reference §6.3).
        with pytest.raises(OutcomeUnknown, match="no newer one"):
            await broker.submit(order("tb-refused"))
        # Without a usable token nothing leaves: AuthError, as before any request.
        with pytest.raises(AuthError, match="no newer one"):
            await broker.submit(order("tb-refused"))
    finally:
        await http.aclose()

    assert [c.status for c in calls if c.path == "/order/placeorder"] == [401]
    assert sim.call(lambda: sim.ctx.engine.orders(ACCOUNT_ID)) == []
