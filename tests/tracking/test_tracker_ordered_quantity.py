"""A fill completes a row only once the order's quantity traded, also for a row that no plan
of this tradebridge placed: a row adopted by hand (``review adopt``: a legacy ``placed`` row,
or an order resized by hand, ``--allow-other-quantity``).

The tracker took the quantity ordered from the row's ``submitted`` plan alone. Without one
(legacy rows) the first fill ended the row ``filled``; with one but adopted onto an order of
another quantity, the row ended ``filled`` at the plan's quantity. Either way the later fills
were dropped (``fill_beyond_order``) and the final row was never compared again, short of
what the broker traded. The adoption's own record of the order's quantity (its
``adopted_by_hand`` event) comes first, then the plan, then the row's ``quantity``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tracking.conftest import ACCOUNT, Stack
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.domain.lifecycle import SignalStatus as S
from tradebridge.domain.orders import OrderFilled
from tradebridge.tracking.tracker import Tracker

ORDER = "880077"


def _fill(fill_id: str) -> BrokerOrderEvent:
    return BrokerOrderEvent(
        account=AccountName(ACCOUNT),
        broker_order_id=BrokerOrderId(ORDER),
        client_order_id=None,
        event=OrderFilled(qty=1, price=Decimal(21000), ts_event=datetime.now(UTC),
                          fill_id=fill_id),
    )  # fmt: skip


async def _states(stack: Stack, fills: int) -> list[tuple[S, Decimal]]:
    tracker = Tracker(stack.settings, stack.ledger, stack.pool)
    seen = []
    for n in range(1, fills + 1):
        await tracker.apply(_fill(f"f{n}"))  # False for a fill of a row ended already
        row = await stack.ledger.get("adopted")
        assert row is not None
        seen.append((row.status, Decimal(row.filled_qty or 0)))
    return seen


async def test_tracker_legacy_row_adopted_without_plan_partial_fill_is_partial(
    stack: Stack,
) -> None:
    await stack.insert("adopted", quantity=2, tradovate_order_id=ORDER, status="working")
    await stack.ledger.add_event("adopted", "adopted_by_hand",
                                 {"broker_order_id": ORDER, "broker_checked": False})  # fmt: skip

    assert await _states(stack, 2) == [(S.PARTIALLY_FILLED, 1), (S.FILLED, 2)]


async def test_tracker_row_adopted_onto_resized_order_fills_to_the_order_quantity(
    stack: Stack,
) -> None:
    await stack.insert("adopted", quantity=2, client_order_id="tb-adopted",
                       tradovate_order_id=ORDER, status="working")  # fmt: skip
    await stack.ledger.add_event("adopted", "submitted", {"plan": "order", "quantity": 2})
    await stack.ledger.add_event("adopted", "adopted_by_hand",
                                 {"broker_order_id": ORDER, "broker_checked": True,
                                  "quantity": 3})  # fmt: skip

    assert await _states(stack, 3) == [
        (S.PARTIALLY_FILLED, 1), (S.PARTIALLY_FILLED, 2), (S.FILLED, 3),
    ]  # fmt: skip
