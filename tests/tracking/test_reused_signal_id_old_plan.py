"""A signal id reused after its row was deleted: an unknown new row never takes the old plan.

The history is append-only and outlives its row (migration 0015), so the new row's history
begins with the old row's events. An ``unknown`` row is resolved from the plan its latest
submit recorded (``Placer._sent_of``); one that recorded none (a worker died between claim
and send) must go to ``needs_review``. Read across the ``deleted`` event, the old row's
plan was taken for the new row's: looked up, found absent (the old row's orders are
excluded), and sent again: an order of an intent that was deleted.
"""

from __future__ import annotations

from _support.rig import order
from tracking.conftest import ACCOUNT, Stack
from tradebridge.dispatch.placement import plan_to_json
from tradebridge.dispatch.reconcile import Reconciler
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.pipeline.route import PlaceOrder


async def test_an_unknown_reused_signal_id_without_its_own_plan_never_sends_the_old_plan(
    stack: Stack,
) -> None:
    await stack.insert("np")
    await stack.ledger.claim_next("ghost")
    old_plan = PlaceOrder(order("tb-np", account=ACCOUNT, quantity=3))
    await stack.ledger.transition(
        "np", SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner="ghost",
        client_order_id="tb-np", detail=plan_to_json(old_plan),
    )  # fmt: skip
    async with stack.ledger.pool.acquire() as conn:
        await conn.execute("delete from trading_signals where signal_id = 'np'")

    await stack.insert("np")
    await stack.ledger.claim_next("ghost")
    await stack.ledger.transition(
        "np", SignalStatus.SUBMITTED, expected=SignalStatus.PROCESSING, owner="ghost"
    )

    report = await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()

    row = await stack.ledger.get("np")
    assert row is not None
    assert stack.entries() == [], "sent the deleted row's plan"
    assert report.resolved == {"np": "needs_review"}
    assert row.status is SignalStatus.NEEDS_REVIEW
    assert "no plan recorded" in (row.error_message or "")
