"""An order POST answered HTTP 404, through the dispatcher, on both dialects.

Reference §6.3: a 404 is "unknown id or wrong route. Do not retry. Run `doctor`", and §10.1
is the field report of the bridge answering 404 to ``POST /accounts/{id}/orders`` while GETs
work. Nothing was executed, so the row is final at once, rejected in words that point at
``doctor``; the order is never sent again, and the account's next row goes out as usual.
"""

from __future__ import annotations

import pytest

from _support.fixtures import redis_client
from tracking.conftest import Stack, StackFactory, ledger_url, make_stack
from tradebridge.domain.enums import Dialect

__all__ = ["ledger_url", "make_stack", "redis_client"]  # fixtures

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])

ORDER_PATH = {Dialect.NATIVE: "/order/placeorder", Dialect.TVBRIDGE: "/orders"}


def _refuse_order_posts(stack: Stack, dialect: Dialect, on: bool) -> None:
    faults = stack.sim.ctx.faults
    if dialect is Dialect.NATIVE:
        faults.missing_routes = ["order/placeorder"] if on else []
    else:
        faults.bridge_order_post_404 = on


async def _order_posts(stack: Stack, signal_id: str, dialect: Dialect) -> int:
    calls = await stack.ledger.broker_calls(signal_id)
    path = ORDER_PATH[dialect]
    return sum(
        1 for c in calls if c.call.method == "POST" and c.call.path.split("?")[0].endswith(path)
    )


async def test_order_post_answered_404_is_rejected_at_once_and_never_resent(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    async with make_stack(dialect=dialect) as stack:
        _refuse_order_posts(stack, dialect, on=True)
        stack.start(stack.dispatcher())
        await stack.insert("n404")

        row = await stack.wait("n404", "rejected", "failed", "unknown", "needs_review")

        assert row.status == "rejected", (row.status, row.error_message)
        assert row.error_message is not None
        assert "404" in row.error_message
        assert "tradebridge doctor" in row.error_message
        assert "resent" in row.error_message
        assert row.placement_attempts == 1
        assert await _order_posts(stack, "n404", dialect) == 1
        assert stack.entries() == []
        events = [e.event for e in await stack.ledger.history("n404")]
        assert "unknown" not in events

        # The route works again: the account's next row is placed, the refused one stays put.
        _refuse_order_posts(stack, dialect, on=False)
        await stack.insert("n404-next")
        await stack.wait("n404-next", "working", "filled")
        again = await stack.ledger.get("n404")
        assert again is not None
        assert again.status == "rejected"
        assert await _order_posts(stack, "n404", dialect) == 1
        assert len(stack.entries()) == 1
