"""Metrics that move (issue 14): every broker call counts in
``tradebridge_broker_calls_total{dialect,operation,outcome}`` and its duration in
``tradebridge_broker_call_seconds``, and a fill the broker reports counts in
``tradebridge_signals_outcome_total{outcome="filled"}``; a real simulator over sockets."""

from __future__ import annotations

import pytest

from tracking.conftest import StackFactory
from tradebridge.brokers.http import _outcome, operation_of
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

    assert _value("tradebridge_broker_calls_total", **submit, outcome="ok") == calls + 3
    assert _value("tradebridge_broker_call_seconds_count", **submit) == timed + 3
    assert _value("tradebridge_signals_outcome_total", outcome="filled") == filled + 3


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
