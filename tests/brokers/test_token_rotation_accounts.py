"""A token refused under one account's key is not sent for the user's other accounts.

One Tradovate token covers all of its user's accounts and is stored under each account's key
(reference §2.9, §9.3). An operator (or token service) replaces it in Redis and the old one
stops working. The bridge adapter learns that on its next read, which uses the first account's
key: that key is re-read. The other account's key still had the old token cached in the
process, so that account's next order went out with a token this process had just seen
refused: answered 401 after sending, it became an unknown outcome (a lookup, a delay, the
account's position-based intents held back) for an order that could have been sent cleanly.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from _support.rig import (
    ACCOUNT,
    Rig,
    RigFactory,
    build_adapter,
    front,
    login,
    make_rig,
    order,
    redis_client,
    ticks,
)
from tradebridge.brokers.http import BrokerCall
from tradebridge.config import AccountConfig, TokenConfig
from tradebridge.domain.enums import Dialect, OrderType
from tradebridge.domain.ids import AccountName
from tradebridge.store.tokens import TokenStore

__all__ = ["make_rig", "redis_client"]  # fixtures

OTHER = "DEMO0000002"


async def test_replaced_token_is_not_sent_for_the_users_other_account(
    make_rig: RigFactory, redis_client: aioredis.Redis
) -> None:
    async with make_rig(Dialect.TVBRIDGE) as rig:
        await _rotation(rig, redis_client)


async def _rotation(rig: Rig, redis_client: aioredis.Redis) -> None:
    store = TokenStore(redis_client, TokenConfig())
    accounts = [AccountConfig(name=n, dialect=Dialect.TVBRIDGE) for n in (ACCOUNT, OTHER)]
    broker, http = build_adapter(Dialect.TVBRIDGE, rig.sim, store, accounts=accounts)
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)
    try:
        limit = ticks(rig.last(front()), -100)
        for n, name in enumerate((ACCOUNT, OTHER)):  # both keys' tokens cached
            await broker.submit(order(f"tb-rot-{n}", OrderType.LIMIT, limit=limit, account=name))

        # The operator replaces the user's token; the old one is refused from now on.
        rig.sim.call(rig.sim.ctx.auth.expire_all)
        value = await login(rig.sim, Dialect.TVBRIDGE)
        for name in (ACCOUNT, OTHER):
            await redis_client.set(f"token:{name}", value)

        # A read (the poller's, a report) meets the 401 first and takes the new token.
        await broker.order_reports(AccountName(ACCOUNT))
        refused_before = sum(1 for c in calls if c.status == 401)

        await broker.submit(order("tb-rot-2", OrderType.LIMIT, limit=limit, account=OTHER))

        refused_posts = [c for c in calls if c.status == 401 and c.method == "POST"]
        assert refused_posts == [], (
            f"the order went out with the refused token ({refused_before} 401s before it)"
        )
    finally:
        await broker.close()
        await http.aclose()
