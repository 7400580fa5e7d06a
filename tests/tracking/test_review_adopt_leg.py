"""``tradebridge review adopt`` of a bracket leg of another row is refused.

``adopt`` did not ask the broker what the order is: a leg's id (no row owns it as its
``tradovate_order_id``) was taken, the row became ``working`` on it, and when the leg filled
the tracker and reconcile booked the leg's fill as the row's own (a buy row "filled" by a
sell stop while the account is flat). It reads the order at the broker now.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from tracking.conftest import Stack
from tracking.test_review_adopt_checks import (
    S,
    _adopt,
    _grid,
    _needs_review,
    broker_config,
    stack,
)
from tradebridge.domain.enums import Dialect
from tradebridge.sim.engine import OrdStatus

__all__ = ["broker_config", "stack"]

pytestmark = pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])


async def test_adopt_bracket_leg_of_another_row_refused(
    stack: Stack, ledger_url: str, broker_config: Path
) -> None:
    # A filled entry with a stop loss and a take profit: its legs rest at the broker.
    await stack.insert("e1", quantity=1, reference_price=_grid(stack.last()),
                       stop_loss_ticks=40, take_profit_ticks=60)  # fmt: skip
    await stack.wait("e1", "filled")
    deadline = asyncio.get_running_loop().time() + 15
    legs = []
    while asyncio.get_running_loop().time() < deadline:
        legs = [o for o in stack.sim_orders()
                if o.parent_id is not None and o.ord_status is OrdStatus.WORKING]  # fmt: skip
        if len(legs) >= 2:
            break
        await asyncio.sleep(0.05)
    assert len(legs) >= 2, legs
    stop = min(legs, key=lambda o: o.version.stop_price or o.version.price or Decimal(0))
    await _needs_review(stack, "r1")

    result = await _adopt("r1", str(stop.id), broker_config, ledger_url)

    row = await stack.ledger.get("r1")
    assert row is not None
    assert result.exit_code == 1, result.output
    assert f"order {stop.id} is a bracket leg" in result.output
    assert row.status is S.NEEDS_REVIEW
