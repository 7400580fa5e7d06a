"""A row escalated only because no lookup could run is failed once a lookup proves it absent.

``needs_review`` is for rows a lookup cannot settle (ambiguous matches). A row whose lookups
kept failing (no usable token, the broker's routes unreachable) until the bound was never in
doubt, only unasked: once a lookup works and finds nothing, it ends ``failed`` ("not sent
late"), as it would have within the bound, and no longer waits for a human.
"""

from __future__ import annotations

import time

from _support.rig import order
from tracking.conftest import ACCOUNT, StackFactory
from tradebridge.dispatch.placement import plan_to_json
from tradebridge.dispatch.reconcile import Reconciler
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.pipeline.route import PlaceOrder


async def test_a_row_escalated_for_failing_lookups_fails_once_one_proves_it_absent(
    make_stack: StackFactory,
) -> None:
    async with make_stack(dispatcher={"unknown_bound_s": 0.5, "lookup_attempts": 1}) as stack:
        # A worker wrote the write-ahead and died before its request left.
        await stack.insert("lf")
        await stack.ledger.claim_next("ghost")
        plan = PlaceOrder(order("tb-lf", account=ACCOUNT))
        await stack.ledger.transition(
            "lf", SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner="ghost",
            client_order_id="tb-lf", detail=plan_to_json(plan),
        )  # fmt: skip
        stack.sim.ctx.faults.missing_routes = ["order/deps", "order/list", "order/item"]
        reconciler = Reconciler(stack.settings, stack.ledger, stack.pool)
        deadline = time.monotonic() + 20
        row = await stack.ledger.get("lf")
        while row is not None and row.status is not SignalStatus.NEEDS_REVIEW:
            assert time.monotonic() < deadline, f"not escalated: {row.status}"
            await reconciler.reconcile_once()
            row = await stack.ledger.get("lf")
        assert row is not None
        assert "lookup_failing" in (row.error_message or "")

        stack.sim.ctx.faults.missing_routes = []
        await reconciler.reconcile_once()

        row = await stack.ledger.get("lf")
        assert row is not None
        assert row.status is SignalStatus.FAILED
        assert "looked up once lookups worked again" in (row.error_message or "")
        assert stack.sim_orders() == []
