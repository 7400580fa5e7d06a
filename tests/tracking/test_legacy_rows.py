"""Rows shaped like the previous deployment's inserts, on a ledger migrated from its tables,
placed by a worker on the simulator (issue 11, part B; docs/migrating.md).

Every test here runs on the replaced deployment's exact tables (``_support/legacy.py``) with
rows in each of its statuses, migrated by ``db migrate``: its in-flight rows are on a
configured account (``ACCOUNT_2``), so that "never placed again" means something.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from _support.database import fresh_database
from _support.legacy import OLD_CANCEL, OLD_INSERT, create_legacy
from _support.rig import front
from tracking.conftest import ACCOUNT, ACCOUNT_2, Stack, StackFactory
from tradebridge.domain.enums import Dialect, OrderType
from tradebridge.sim.config import SimConfig
from tradebridge.store.embedded import EmbeddedPostgres
from tradebridge.store.migrate import migrate

FROZEN = SimConfig(port=0, price_step_s=3600)  # the price stays where it is


@pytest.fixture
async def ledger_url(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """The previous deployment's tables and rows, migrated (overrides the plain ledger)."""
    async with fresh_database(postgres_server.url, migrated=False) as url:
        await create_legacy(url, account=ACCOUNT_2, instrument=front().name)
        await migrate(url)
        yield url


async def _old_insert(stack: Stack, signal_id: str, **columns: Any) -> None:
    """Insert as the previous deployment's strategies did (status 'pending', 0.0 brackets)."""
    row = {"strategy": "orb", "instrument": front().name, "side": "buy", "order_type": "market",
           "quantity": 1, "price": None, "account": ACCOUNT, **columns}  # fmt: skip
    await stack.ledger.pool.execute(OLD_INSERT, signal_id, *row.values())


def _on_grid(price: Decimal) -> Decimal:
    tick = front().product.tick_size
    return (price / tick).to_integral_value() * tick


async def test_old_market_insert_with_zero_brackets_fills_without_legs(
    make_stack: StackFactory,
) -> None:
    async with make_stack(FROZEN) as stack:
        stack.start(stack.dispatcher())
        await _old_insert(stack, "orb-1")
        row = await stack.wait("orb-1", "filled")
        assert row.stop_loss == row.take_profit == Decimal(0)  # as inserted: 0.0 is none
        assert [o.version.order_type for o in stack.sim_orders()] == [OrderType.MARKET]
        assert stack.net_position() == 1


async def test_old_stop_insert_with_only_price_rests_as_a_stop_at_that_price(
    make_stack: StackFactory,
) -> None:
    async with make_stack(FROZEN) as stack:
        trigger = _on_grid(stack.last() + 20)
        stack.start(stack.dispatcher())
        await _old_insert(stack, "orb-2", order_type="stop", price=trigger)
        await stack.wait("orb-2", "working")
        [entry] = stack.entries()
        assert entry.version.order_type is OrderType.STOP
        assert entry.version.stop_price == trigger
        assert entry.version.price is None


async def test_old_cancel_before_a_worker_claims_the_row_is_honoured_and_recorded(
    make_stack: StackFactory,
) -> None:
    async with make_stack(FROZEN) as stack:
        await _old_insert(stack, "orb-3")
        assert await stack.ledger.pool.execute(OLD_CANCEL, "orb-3") == "UPDATE 1"
        await _old_insert(stack, "orb-4")  # behind it in the account's queue
        stack.start(stack.dispatcher())
        await stack.wait("orb-4", "filled")
        row = await stack.ledger.get("orb-3")
        history = await stack.ledger.history("orb-3")
        assert row is not None
        assert row.status == "cancelled"
        assert [e.event for e in history] == ["cancelled"]
        assert len(stack.sim_orders()) == 1  # orb-4's only


async def test_legacy_rows_in_flight_are_never_placed_again(make_stack: StackFactory) -> None:
    async with make_stack(FROZEN) as stack:
        stack.start(stack.dispatcher())
        # The legacy pending row is the queue: placed (a limit far from the market rests).
        await stack.wait("old-pending", "working", "filled")
        await _old_insert(stack, "orb-5", account=ACCOUNT_2)  # the account's next row
        await stack.wait("orb-5", "filled")
        for signal_id in ("old-processing", "old-placed"):
            row = await stack.ledger.get(signal_id)
            assert row is not None
            assert row.status == "needs_review", signal_id
        assert {o.cl_ord_id for o in stack.entries(ACCOUNT_2)} == {
            (await stack.ledger.get(s)).client_order_id  # type: ignore[union-attr]
            for s in ("old-pending", "orb-5")
        }


async def test_marketable_limit_stop_sends_a_buy_limit_above_the_ask_as_a_stop(
    make_stack: StackFactory,
) -> None:
    async with make_stack(FROZEN, dialect=Dialect.TVBRIDGE,
                          orders={"marketable_limit": "stop"}) as stack:  # fmt: skip
        limit = _on_grid(stack.last() + 10)
        stack.start(stack.dispatcher())
        await _old_insert(stack, "brk-1", order_type="limit", price=limit)
        await stack.wait("brk-1", "working")
        [entry] = stack.entries()
        submitted = [e for e in await stack.ledger.history("brk-1") if e.event == "submitted"]
        assert entry.version.order_type is OrderType.STOP
        assert entry.version.stop_price == limit
        assert f"sent as a stop at {limit}" in submitted[0].detail["note"]
        assert stack.net_position() == 0


async def test_marketable_limit_deny_refuses_a_limit_through_the_reference_price(
    make_stack: StackFactory,
) -> None:
    async with make_stack(FROZEN, orders={"marketable_limit": "deny"}) as stack:
        last = stack.last()
        stack.start(stack.dispatcher())
        await stack.insert("brk-2", order_type="limit", price=_on_grid(last + 10),
                           reference_price=last)  # fmt: skip
        row = await stack.wait("brk-2", "denied")
        assert row.error_message is not None
        assert "orders.marketable_limit = deny" in row.error_message
        assert stack.sim_orders() == []


async def test_marketable_limit_without_any_price_goes_as_given_and_says_so(
    make_stack: StackFactory,
) -> None:
    # The native dialect reads no quotes, and the row has no reference_price.
    async with make_stack(FROZEN, orders={"marketable_limit": "stop"}) as stack:
        stack.start(stack.dispatcher())
        await _old_insert(stack, "brk-3", order_type="limit", price=_on_grid(stack.last() + 10))
        await stack.wait("brk-3", "filled")
        events = [e.event for e in await stack.ledger.history("brk-3")]
        assert "limit_unjudged" in events
        assert [o.version.order_type for o in stack.entries()] == [OrderType.LIMIT]
