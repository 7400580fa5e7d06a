"""Metrics that move (issue 14): every broker call counts in
``tradebridge_broker_calls_total{dialect,operation,outcome}`` and its duration in
``tradebridge_broker_call_seconds``, and a fill the broker reports counts in
``tradebridge_signals_outcome_total{outcome="filled"}``; a real simulator over sockets."""

from __future__ import annotations

import asyncio

import pytest

from tracking.conftest import StackFactory
from tradebridge.brokers.http import _outcome, operation_of
from tradebridge.dispatch.reconcile import Reconciler
from tradebridge.domain.enums import Dialect
from tradebridge.obs import metrics

SUBMIT = {Dialect.NATIVE: "POST /order/placeorder", Dialect.TVBRIDGE: "POST /accounts/{id}/orders"}


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_broker_calls_and_fills_are_counted(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    submit = {"dialect": dialect.value, "operation": SUBMIT[dialect]}
    calls = _value("tradebridge_broker_calls_total", **submit, outcome="ok")
    timed = _value("tradebridge_broker_call_seconds_count", **submit)
    filled = _value("tradebridge_signals_outcome_total", outcome="filled")
    async with make_stack(dialect=dialect) as stack:
        stack.start(stack.dispatcher())
        for n in range(3):
            await stack.insert(f"m{n}")
            await stack.wait(f"m{n}", "filled")
        # The tracker counts a fill once its write is back from the database, a moment
        # after the row reads filled.
        deadline = asyncio.get_running_loop().time() + 10
        while _value("tradebridge_signals_outcome_total", outcome="filled") < filled + 3:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)

    assert _value("tradebridge_broker_calls_total", **submit, outcome="ok") == calls + 3
    assert _value("tradebridge_broker_call_seconds_count", **submit) == timed + 3
    assert _value("tradebridge_signals_outcome_total", outcome="filled") == filled + 3


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_a_fill_only_reconcile_saw_is_counted_once(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    # No tracker: the fill reaches the row through reconcile's net under the events alone.
    filled = _value("tradebridge_signals_outcome_total", outcome="filled")
    async with make_stack(dialect=dialect) as stack:
        stack.start(stack.dispatcher(tracking=False))
        await stack.insert("rf0")
        await stack.wait("rf0", "working")
        reconciler = Reconciler(stack.settings, stack.ledger, stack.pool)
        deadline = asyncio.get_running_loop().time() + 15
        while (await reconciler.reconcile_once()).synced.get("rf0") != "filled":
            assert asyncio.get_running_loop().time() < deadline, "reconcile never synced rf0"
            await asyncio.sleep(0.1)
        again = await reconciler.reconcile_once()

    assert again.synced == {}
    assert _value("tradebridge_signals_outcome_total", outcome="filled") == filled + 1


@pytest.mark.parametrize(
    ("method", "path", "operation"),
    [
        ("POST", "/order/placeorder", "POST /order/placeorder"),
        ("GET", "/order/item?id=1000001", "GET /order/item"),
        ("GET", "/position/deps?masterid=100001", "GET /position/deps"),
        ("POST", "/accounts/D1234567/orders", "POST /accounts/{id}/orders"),
        ("DELETE", "/accounts/D1234567/orders/1000002", "DELETE /accounts/{id}/orders/{id}"),
        ("GET", "/accounts/100001/state", "GET /accounts/{id}/state"),
    ],
)
def test_operation_label_keeps_the_route_not_the_ids(
    method: str, path: str, operation: str
) -> None:
    assert operation_of(method, path) == operation


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, {"orderId": 1}, "ok"),
        (200, {"p-ticket": "x", "p-time": 15}, "penalty"),
        (400, {"errorText": "no"}, "rejected"),
        (429, None, "rejected"),
        (503, None, "error"),
        (None, None, "error"),
    ],
)
def test_outcome_label(status: int | None, body: object, outcome: str) -> None:
    assert _outcome(status, body) == outcome


async def test_reconcile_round_reads_queue_depth_and_oldest_age(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack:
        for n in range(3):
            await stack.insert(f"q{n}")
        await stack.ledger.pool.execute(
            "update trading_signals set created_at = now() - interval '90 seconds' "
            "where signal_id = 'q0'"
        )
        await Reconciler(stack.settings, stack.ledger, stack.pool).reconcile_once()
        depth = _value("tradebridge_queue_depth")
        oldest = _value("tradebridge_queue_oldest_age_seconds")

    assert depth == 3
    assert 90 <= oldest < 600


@pytest.mark.parametrize("dialect", [Dialect.NATIVE, Dialect.TVBRIDGE])
async def test_each_step_of_a_filled_row_is_observed_once(
    make_stack: StackFactory, dialect: Dialect
) -> None:
    steps = ("claimed", "submitted", "answered", "filled", "end_to_end")
    counts = {s: _value("tradebridge_step_seconds_count", step=s) for s in steps}
    sums = {s: _value("tradebridge_step_seconds_sum", step=s) for s in steps}
    async with make_stack(dialect=dialect) as stack:
        stack.start(stack.dispatcher())
        for n in range(3):
            await stack.insert(f"st{n}")
        rows = [await stack.wait(f"st{n}", "filled") for n in range(3)]
        # The tracker observes the fill once it applied it: wait for all three.
        deadline = asyncio.get_running_loop().time() + 10
        while _value("tradebridge_step_seconds_count", step="filled") < counts["filled"] + 3:
            assert asyncio.get_running_loop().time() < deadline, "fills not observed"
            await asyncio.sleep(0.02)

    grew = {s: _value("tradebridge_step_seconds_count", step=s) - counts[s] for s in steps}
    assert grew == dict.fromkeys(steps, 3)
    # end_to_end spans the steps the database timed (insert → fill), never less than them.
    spent = {s: _value("tradebridge_step_seconds_sum", step=s) - sums[s] for s in steps}
    assert spent["end_to_end"] >= spent["claimed"] + spent["submitted"]
    longest = max((r.ts_final - r.created_at).total_seconds() for r in rows if r.ts_final)
    assert spent["end_to_end"] <= 3 * longest + 1e-6
