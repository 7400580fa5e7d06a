"""Rows the user (a strategy, a person in Supabase's editor) inserts, edits or deletes
while tradebridge works on them: the table is theirs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from _support.rig import front
from tracking.conftest import ACCOUNT, Stack
from tradebridge.dispatch.reconcile import Reconciler


def _far_limit(stack: Stack, ticks: int = 40) -> Decimal:
    tick = front().product.tick_size
    return (stack.last() / tick).to_integral_value() * tick - ticks * tick


async def test_a_working_row_deleted_by_the_user_stops_nothing_else(stack: Stack) -> None:
    """Deleting a working row leaves its order at the broker untracked; the tracker and
    reconcile carry on with every other row."""
    stack.start(stack.dispatcher())
    limit = _far_limit(stack)
    await stack.insert("gone", order_type="limit", price=limit)
    await stack.wait("gone", "working")
    await stack.ledger.pool.execute("delete from trading_signals where signal_id = 'gone'")
    stack.set_price(limit - 4 * front().product.tick_size)  # the deleted row's order fills
    await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
    await stack.insert("after")
    row = await stack.wait("after", "filled")
    assert row.filled_qty == 1


async def test_quantity_edited_while_working_does_not_change_what_filled_means(
    stack: Stack,
) -> None:
    stack.start(stack.dispatcher())
    limit = _far_limit(stack)
    await stack.insert("q", order_type="limit", price=limit, quantity=2)
    await stack.wait("q", "working")
    await stack.ledger.pool.execute(
        "update trading_signals set quantity = 5, side = 'sell' where signal_id = 'q'"
    )
    stack.set_price(limit - 4 * front().product.tick_size)
    row = await stack.wait("q", "filled")
    assert row.filled_qty == 2
    [entry] = stack.entries()
    assert entry.filled_qty == 2


@pytest.mark.parametrize("status", ["working", "filled"])
async def test_a_placed_row_set_back_to_pending_is_refused(stack: Stack, status: str) -> None:
    stack.start(stack.dispatcher())
    limit = _far_limit(stack)
    order_type = "limit" if status == "working" else "market"
    await stack.insert("back", order_type=order_type, price=limit if status == "working" else None)
    await stack.wait("back", status)
    with pytest.raises(asyncpg.PostgresError, match="illegal status move"):
        await stack.ledger.pool.execute(
            "update trading_signals set status = 'pending' where signal_id = 'back'"
        )
    assert len(stack.entries()) == 1


async def test_duplicate_signal_ids_in_one_transaction_insert_nothing(stack: Stack) -> None:
    with pytest.raises(asyncpg.UniqueViolationError):
        await stack.ledger.pool.execute(
            "insert into trading_signals (signal_id, instrument, side, order_type, quantity, "
            f"account_name) values ('dup', '{front().name}', 'buy', 'market', 1, '{ACCOUNT}'),"
            f" ('dup', '{front().name}', 'sell', 'market', 1, '{ACCOUNT}')"
        )
    assert await stack.ledger.get("dup") is None


@pytest.mark.parametrize(
    "columns",
    [{"quantity": None}, {"side": None}, {"instrument": None}, {"account_name": None},
     {"quantity": Decimal(-1)}, {"quantity": Decimal("1e30")}],
)  # fmt: skip
async def test_nulls_and_odd_values_are_denied_and_hold_nothing_back(
    stack: Stack, columns: dict[str, Any]
) -> None:
    stack.start(stack.dispatcher())
    await stack.insert("odd", **columns)
    await stack.insert("next")
    odd = await stack.wait("odd", "denied", timeout=10)
    assert odd.error_message
    await stack.wait("next", "filled", timeout=10)
    assert len(stack.entries()) == 1
