"""Cold caches filled once: concurrent lookups of one user's accounts and contracts share
one request (issue 12: a 20-account fan-out listed the accounts hundreds of times)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from _support.native import ACCOUNTS, NativeRig, front, rig, sim, sim_clock
from _support.rig import ACCOUNT, Rig, RigFactory, make_rig, redis_client
from tradebridge.brokers.tradovate import TradovateBroker
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker
from tradebridge.domain.enums import Dialect
from tradebridge.domain.ids import AccountName

__all__ = ["make_rig", "redis_client", "rig", "sim", "sim_clock"]  # fixtures


@pytest.fixture
async def user_broker(rig: NativeRig) -> AsyncIterator[TradovateBroker]:
    """Return a native adapter serving both demo accounts of one named user."""
    broker = TradovateBroker(rig.broker.config, ACCOUNTS, rig.store, http=rig.http, user="demo")
    yield broker
    await broker.close()


def _paths(rig: NativeRig | Rig, path: str) -> int:
    return sum(1 for c in rig.calls if c.path.split("?")[0] == path)


async def test_native_concurrent_account_lookups_share_one_account_list(
    rig: NativeRig, user_broker: TradovateBroker
) -> None:
    names = [ACCOUNTS[i % 2].name for i in range(20)]

    ids = await asyncio.gather(*(user_broker.account_id(n) for n in names))

    assert _paths(rig, "/account/list") == 1
    assert len(set(ids)) == 2


async def test_native_accounts_lists_each_user_once(
    rig: NativeRig, user_broker: TradovateBroker
) -> None:
    listed = await user_broker.accounts()

    assert {a.name for a in listed} >= {a.name for a in ACCOUNTS}
    assert _paths(rig, "/account/list") == 1


async def test_native_concurrent_contract_lookups_share_one_find(
    rig: NativeRig, user_broker: TradovateBroker
) -> None:
    symbol = front().name

    await asyncio.gather(*(user_broker.resolve_contract(symbol, ACCOUNTS[0].name)
                           for _ in range(20)))  # fmt: skip

    assert _paths(rig, "/contract/find") == 1


async def test_native_shared_listing_survives_one_callers_cancellation(
    rig: NativeRig, user_broker: TradovateBroker
) -> None:
    first = asyncio.ensure_future(user_broker.account_id(ACCOUNTS[0].name))
    second = asyncio.ensure_future(user_broker.account_id(ACCOUNTS[1].name))
    await asyncio.sleep(0)
    first.cancel()

    assert await second > 0
    assert _paths(rig, "/account/list") == 1


@pytest.fixture
async def bridge(make_rig: RigFactory) -> AsyncIterator[Rig]:
    """Return a bridge rig on a default simulator."""
    async with make_rig(Dialect.TVBRIDGE) as built:
        yield built


async def test_bridge_concurrent_account_lookups_share_one_accounts_read(bridge: Rig) -> None:
    broker = bridge.broker
    assert isinstance(broker, TvBridgeBroker)
    before = _paths(bridge, "/accounts")

    ids = await asyncio.gather(*(broker.bridge_id(AccountName(ACCOUNT)) for _ in range(20)))

    assert len(set(ids)) == 1
    assert _paths(bridge, "/accounts") - before == 1
