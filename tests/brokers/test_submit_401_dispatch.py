"""An order executed and then answered 401, through the dispatcher, on both dialects.

Reference §6.3 (401: "check whether the order exists before resubmitting") and §11.2 rule 3
("401/429 mid-flight" is ambiguous): the row goes ``unknown``, the lookup adopts the order
the broker executed, and nothing is sent twice, although a fresh token is at hand at once.
"""

from __future__ import annotations

import pytest

from _support.fixtures import redis_client
from _support.rig import front, login
from tracking.conftest import ACCOUNT, ACCOUNT_2, StackFactory, ledger_url, make_stack
from tradebridge.domain.enums import Dialect
from tradebridge.store.tokens import StoredToken

__all__ = ["ledger_url", "make_stack", "redis_client"]  # fixtures

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])

# Native finds its clOrdId; the bridge echoes no requestId, so it matches by shape (§11.3).
ADOPTED = {Dialect.NATIVE: "adopted", Dialect.TVBRIDGE: "adopted_probable"}


async def test_dispatcher_order_executed_then_401_looked_up_and_adopted_sent_once(
    make_stack: StackFactory, dialect: Dialect, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_stack(dialect=dialect) as stack:
        tokens = stack.pool.tokens
        renew = tokens.after_refused

        async def token_service_rotated(account_name: str, refused: StoredToken) -> StoredToken:
            # What made the answer a 401: the token service replaced the token meanwhile.
            fresh = await login(stack.sim, dialect)
            for name in (ACCOUNT, ACCOUNT_2):
                await stack.redis.set(f"token:{name}", fresh)
            return await renew(account_name, refused)

        monkeypatch.setattr(tokens, "after_refused", token_service_rotated)
        faults = stack.sim.ctx.faults
        faults.drop_mode = "http_401"
        faults.drop_after_accept_rate = 1.0
        tick = front().product.tick_size
        limit = (stack.last() / tick).to_integral_value() * tick - 40 * tick
        stack.start(stack.dispatcher())
        await stack.insert("r401", order_type="limit", price=limit)
        await stack.wait("r401", "unknown", "working")
        faults.drop_after_accept_rate = 0.0

        row = await stack.wait("r401", "working")

        [order] = stack.entries()
        assert row.tradovate_order_id == str(order.id)
        assert row.placement_attempts == 1
        events = [e.event for e in await stack.ledger.history("r401")]
        assert "unknown" in events
        assert ADOPTED[dialect] in events


@pytest.mark.parametrize("status", [408, 409])
async def test_dispatcher_order_executed_then_other_4xx_adopted_never_rejected(
    make_stack: StackFactory, dialect: Dialect, status: int
) -> None:
    # A proxy's 408 or a 409 answered after the order executed: before, the row ended
    # ``rejected`` while its order worked at the broker, followed by nobody.
    async with make_stack(dialect=dialect) as stack:
        faults = stack.sim.ctx.faults
        faults.drop_mode, faults.drop_status = "http_4xx", status
        faults.drop_after_accept_rate = 1.0
        tick = front().product.tick_size
        limit = (stack.last() / tick).to_integral_value() * tick - 40 * tick
        stack.start(stack.dispatcher())
        await stack.insert("r4xx", order_type="limit", price=limit)
        await stack.wait("r4xx", "unknown", "working", "rejected")
        faults.drop_after_accept_rate = 0.0

        row = await stack.wait("r4xx", "working", "rejected")

        [order] = stack.entries()
        assert row.status == "working"
        assert row.tradovate_order_id == str(order.id)
        assert row.placement_attempts == 1
        events = [e.event for e in await stack.ledger.history("r4xx")]
        assert "unknown" in events
        assert ADOPTED[dialect] in events
