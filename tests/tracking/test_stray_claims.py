"""Rows claimed by a live worker that no task of it holds are handed back, not stranded.

A live worker's rows are never taken from it by reconcile (its request may still be waiting
to leave), so a row it claimed and lost track of would hold its account until a restart:
the claim statement committed and its answer was lost, or the task placing an account's
rows died of an error the loop does not expect.
"""

from __future__ import annotations

from typing import Any

from tracking.conftest import Stack
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.errors import DatabaseUnavailable, StoreError


async def test_rows_of_a_claim_whose_answer_was_lost_are_handed_back_and_placed(
    stack: Stack,
) -> None:
    real = stack.ledger.claim
    lost = False

    async def claim(*a: Any, **kw: Any) -> Any:
        nonlocal lost
        result = await real(*a, **kw)
        if result.rows and not lost:
            lost = True  # committed on the server; the answer never arrives
            raise DatabaseUnavailable("the database is unavailable (ConnectionResetError)")
        return result

    stack.ledger.claim = claim  # type: ignore[method-assign]
    await stack.insert("orph")
    await stack.insert("behind")
    stack.start(stack.dispatcher("w1"))

    for signal_id in ("orph", "behind"):
        await stack.wait(signal_id, "working", "filled")
    assert lost
    events = [e.event for e in await stack.ledger.history("orph")]
    assert events.count("requeued") == 1
    assert [o.cl_ord_id for o in stack.entries()] == ["tb-orph", "tb-behind"]


async def test_rows_of_an_account_task_that_failed_are_handed_back_and_placed(
    stack: Stack,
) -> None:
    real = stack.ledger.held_back
    failed = False

    async def held_back(*a: Any, **kw: Any) -> Any:
        nonlocal failed
        if not failed:
            failed = True  # a statement timeout: not "unavailable", so not retried in place
            raise StoreError("the database failed (QueryCanceledError)")
        return await real(*a, **kw)

    stack.ledger.held_back = held_back  # type: ignore[method-assign]
    await stack.insert("ex1", intent="flatten", side=None, quantity=None, order_type=None)
    await stack.insert("ex2")
    stack.start(stack.dispatcher("w1"))

    row = await stack.wait("ex1", "denied", "filled")
    await stack.wait("ex2", "working", "filled")
    assert failed
    assert row.status is SignalStatus.DENIED  # nothing to flatten: denied, not stranded
    assert [o.cl_ord_id for o in stack.entries()] == ["tb-ex2"]
