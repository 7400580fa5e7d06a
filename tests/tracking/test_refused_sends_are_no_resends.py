"""Sends refused for want of a token (nothing left) do not use up ``max_resends``.

docs/dispatcher.md, "The bound": a send refused for want of a token before it left was not
executed, goes out as soon as a token works, and does not count towards `max_resends`. Each
such try is a move ``unknown -> submitted`` all the same, which the lifecycle trigger counts
in ``placement_attempts``; ``Placer._send_absent`` compared that with ``max_resends``, so
after a short token outage the first real submit whose answer was lost and whose order was
proved absent was never resent: the signal ended ``failed`` (found by a review,
2026-12-07). Now the refused sends are taken off.
"""

from __future__ import annotations

import asyncio

import pytest

from tracking.conftest import ACCOUNT, StackFactory
from tradebridge.domain.enums import Dialect


# Native: its submit reads nothing that needs a token before the order request (the bridge
# reads its lookup baseline first, and a refused read keeps the row 'processing').
@pytest.mark.parametrize("dialect", [Dialect.NATIVE])
async def test_sends_refused_for_want_of_a_token_do_not_use_up_the_resends(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with make_stack(dialect=dialect, dispatcher={"max_resends": 1}) as stack:
        stack.start(stack.dispatcher())
        # Warm the caches (accounts, contract) with a first order.
        await stack.insert("w", side="buy", order_type="market", quantity=1)
        await stack.wait("w", "filled")

        # A token outage: nothing in Redis for a moment.
        key = f"token:{ACCOUNT}"
        token = await stack.redis.get(key)
        await stack.redis.delete(key)
        stack.pool.tokens.invalidate(ACCOUNT)  # type: ignore[attr-defined]
        await stack.insert("b", side="buy", order_type="market", quantity=1)

        async def refused_sends() -> int:
            events = await stack.ledger.history("b")
            return sum(
                1 for e in events
                if e.event == "unknown" and isinstance(e.detail, dict) and e.detail.get("not_sent")
            )  # fmt: skip

        deadline = asyncio.get_running_loop().time() + 15
        while await refused_sends() < 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        # Nothing of b left: its send was refused (tried again, each try is one more move to
        # submitted, unless the position read before it is refused too).
        assert await refused_sends() >= 1

        # The token is back; b's first real submit is answered 5xx and not executed.
        faults = stack.sim.ctx.faults
        faults.error_5xx_writes_only = True
        faults.error_5xx_rate = 1.0
        await stack.redis.set(key, token)

        async def sent_once() -> bool:
            events = await stack.ledger.history("b")
            return any(
                e.event == "unknown" and isinstance(e.detail, dict)
                and not e.detail.get("not_sent") and "given_up_at" in e.detail
                for e in events
            )  # fmt: skip

        deadline = asyncio.get_running_loop().time() + 15
        while not await sent_once() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        faults.error_5xx_rate = 0.0  # the lookup proves it absent: it may be resent once
        assert await sent_once()

        # A market order is 'working' for a moment before its fill is written: wait for an end.
        row = await stack.wait("b", "filled", "failed", "rejected", "needs_review", timeout=20)
        entries = [o for o in stack.entries() if o.cl_ord_id == "tb-b"]
        assert row.status.value == "filled", (
            f"b ended {row.status.value} after {row.placement_attempts} moves to submitted, "
            f"of which one reached the broker (answered 5xx, not executed; {len(entries)} "
            f"order of b at the broker): "
            f"{row.error_message}"
        )
        assert len(entries) == 1
