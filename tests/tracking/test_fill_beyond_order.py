"""An order whose quantity is raised at the broker (by hand, in Tradovate) traded more than its
row ordered: the row is `filled` at what it ordered, and each fill beyond is a WARNING drop
(``fill_beyond_order``), not silence: the ledger shows less than the broker traded (found by
a review, 2026-12-07). The row cannot take more than its plan ordered (its quantity comes
from the plan); reconcile's position check reports the difference on the account."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from _support.fixtures import logs_to
from tracking.conftest import ACCOUNT, StackFactory, until
from tradebridge.domain.commands import ModifyOrder
from tradebridge.domain.enums import Dialect, OrderType
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.obs.metrics import REGISTRY
from tradebridge.sim.config import SimConfig

ONE_LOT = SimConfig(port=0, price_step_s=3600, liquidity_per_fill=1)
DROPPED = "tradebridge_tracker_events_dropped_total"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    with logs_to("INFO") as out:
        yield out


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value(DROPPED, {"reason": reason}) or 0.0


def _drops(out: io.StringIO) -> list[dict[str, object]]:
    records = (json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{"))
    return [r for r in records if r.get("event") == "tracker_event_dropped"]


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE], ids=["native", "bridge"])
async def test_a_fill_beyond_what_the_row_ordered_is_a_warning(
    make_stack: StackFactory, log_output: io.StringIO, dialect: Dialect
) -> None:
    before = _dropped("fill_beyond_order")
    async with make_stack(ONE_LOT, dialect=dialect) as stack:
        stack.start(stack.dispatcher("w1"))
        await stack.insert("m1", quantity=2)  # market 2: one lot fills at placement
        await stack.wait("m1", "partially_filled")
        [entry] = stack.entries()
        broker = await stack.pool.get(ACCOUNT)
        await broker.modify(ModifyOrder(AccountName(ACCOUNT), BrokerOrderId(str(entry.id)),
                                        3, OrderType.MARKET))  # fmt: skip
        stack.set_price(stack.last())
        stack.set_price(stack.last() + 1)  # lots 2 and 3 fill
        fills = stack.sim.call(lambda: stack.sim.ctx.engine.fills(entry.id))
        assert sum(f.qty for f in fills) == 3

        row = await stack.wait("m1", "filled")
        if row.filled_qty == Decimal(3):
            # The bridge reports running totals: a poll that saw all three at once wrote them.
            assert dialect is Dialect.TVBRIDGE
            return
        assert row.filled_qty == Decimal(2)
        await until(lambda: _dropped("fill_beyond_order") > before, "the third lot's drop")
        assert _dropped("fill_beyond_order") == before + 1
        [drop] = [d for d in _drops(log_output) if d.get("reason") == "fill_beyond_order"]
        assert (drop["level"], drop["signal_id"]) == ("warning", "m1")
