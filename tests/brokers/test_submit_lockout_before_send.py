"""A lockout known before an order leaves is "not sent", in both dialects.

Another process records the user's lockout in Redis (a 429, a captcha penalty) while this one
prepares an order. The token provider then refuses to hand out a token: nothing is sent. The
placement treats ``Lockout`` as "not sent, waiting for a usable token"; an ``OutcomeUnknown``
("was sent, look it up") would send the row to a lookup that cannot run during the lockout and
end, after the lookups failed, in a review for an order that provably never left.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from _support.rig import (
    Rig,
    build_adapter,
    dialect,
    front,
    make_rig,
    order,
    redis_client,
    rig,
    ticks,
)
from tradebridge.brokers.http import BrokerCall
from tradebridge.brokers.tvbridge.broker import TvBridgeOptions
from tradebridge.config import TokenConfig
from tradebridge.domain.enums import OrderType
from tradebridge.errors import Lockout
from tradebridge.store.tokens import TokenStore

__all__ = ["dialect", "make_rig", "redis_client", "rig"]  # fixtures: both adapters


async def test_lockout_recorded_while_preparing_is_not_an_unknown_outcome(
    rig: Rig, redis_client: aioredis.Redis
) -> None:
    store = TokenStore(redis_client, TokenConfig()).with_users(lambda _name: "demo")
    await store.lockouts.current("demo")  # nothing yet
    # bid_ask "never": the POST is the first call that asks for a token once caches are warm.
    options = TvBridgeOptions(lookup_absent_after_s=0, poll_interval_s=0.1, bid_ask="never")
    broker, http = build_adapter(rig.dialect, rig.sim, store, options=options)
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)
    try:
        limit = ticks(rig.last(front()), -100)
        await broker.submit(order("tb-lock-1", OrderType.LIMIT, limit=limit))  # warms caches
        await store.lockouts.record("demo", "HTTP 429 on another process's call", 60)
        posts_before = sum(1 for c in calls if c.method == "POST")

        with pytest.raises(Lockout):
            await broker.submit(order("tb-lock-2", OrderType.LIMIT, limit=limit))

        assert sum(1 for c in calls if c.method == "POST") == posts_before  # nothing left
        assert [o.cl_ord_id for o in rig.sim_orders()] == ["tb-lock-1"]
    finally:
        await redis_client.delete(store.lockouts.key("demo"))
        await broker.close()
        await http.aclose()
