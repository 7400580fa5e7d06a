"""A row inserted with an in-flight status is refused, naming the row and what to insert.

``processing``, ``submitted``, ``unknown``, ``needs_review``, ``working`` and
``partially_filled`` say a worker holds the row or its order is at the broker. A row a user
inserted so (a strategy copying rows between tables, a hand-written insert) was nobody's claim:
no recovery picks it up (they go by the claim's columns), and as the account's row in flight
it held back every later row of the account for good, a kill switch's flatten included (found
by a review, 2026-12-07). The lifecycle trigger now refuses such an insert
(0013_inserted_pending); final statuses stay allowed (an import of history).
"""

from __future__ import annotations

import asyncpg
import pytest

from _support.rig import front
from tracking.conftest import ACCOUNT, Stack

_INSERT = (
    "insert into trading_signals (signal_id, instrument, side, order_type, quantity, "
    "account_name, status) values ($1, $2, 'buy', 'market', 1, $3, $4)"
)


@pytest.mark.parametrize(
    "status",
    ["processing", "submitted", "unknown", "needs_review", "working", "partially_filled"],
)
async def test_a_row_inserted_in_flight_is_refused_and_holds_nothing_back(
    stack: Stack, status: str
) -> None:
    with pytest.raises(asyncpg.PostgresError) as refused:
        await stack.ledger.pool.execute(_INSERT, "odd", front().name, ACCOUNT, status)

    assert refused.value.sqlstate == "TB412"
    assert refused.value.message == (
        f"signal odd: a row is inserted as pending (or without a status), not {status}: "
        "tradebridge sets that status when it takes the row"
    )
    assert await stack.ledger.get("odd") is None
    # Nothing of it stands in the account's queue: the next row is placed.
    await stack.insert("next")
    stack.start(stack.dispatcher())
    row = await stack.wait("next", "filled", "denied", "failed", "rejected")
    assert row.status.value == "filled", row.error_message


@pytest.mark.parametrize("status", ["pending", "filled", "cancelled", "denied"])
async def test_a_row_inserted_pending_or_final_is_taken(stack: Stack, status: str) -> None:
    await stack.ledger.pool.execute(_INSERT, "row", front().name, ACCOUNT, status)
    row = await stack.ledger.get("row")
    assert row is not None
    assert row.status.value == status
