"""Routing brackets a broker prices from the fill: distances, scale-out, trailing, break-even."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from tradebridge.domain.commands import Bracket, Target
from tradebridge.domain.enums import TimeInForce
from tradebridge.domain.ids import ClientOrderId
from tradebridge.pipeline.route import BrokerView, PlaceOrder, needs, route
from tradebridge.pipeline.validate import Denied, RawSignal, ValidSignal, validate

TODAY = date(2026, 11, 25)
BASE = RawSignal(
    signal_id="s1", account_name="A1", instrument="MNQZ6", side="buy", order_type="market",
    quantity=Decimal(3),
)  # fmt: skip
CID = ClientOrderId("tb-s1")
TWO = [{"ticks": 20, "quantity": 1}, {"ticks": 40, "quantity": 1}]


def _checked(**changes: Any) -> ValidSignal | Denied:
    return validate(replace(BASE, **changes), today=TODAY, accounts={"A1"})


def _routed(from_fill: bool = True, **changes: Any) -> PlaceOrder | Denied:
    signal = _checked(**changes)
    assert isinstance(signal, ValidSignal), signal
    plan = route(signal, BrokerView(), CID, today=TODAY, brackets_from_fill=from_fill)
    assert isinstance(plan, PlaceOrder | Denied)
    return plan


def test_route_market_entry_with_ticks_needs_no_reference_when_the_broker_prices_legs() -> None:
    signal = _checked(stop_loss_ticks=16, take_profit_ticks=40)
    assert isinstance(signal, ValidSignal)

    assert not needs(signal, brackets_from_fill=True).quote
    plan = _routed(stop_loss_ticks=16, take_profit_ticks=40)

    assert isinstance(plan, PlaceOrder)
    assert plan.command.bracket == Bracket(stop_loss_ticks=16, take_profit_ticks=40)
    assert plan.command.bracket.relative


def test_route_ticks_next_to_a_price_are_priced_at_submit_even_from_the_fill() -> None:
    plan = _routed(stop_loss_ticks=16, take_profit=Decimal(22000), reference_price=Decimal(21000))

    assert isinstance(plan, PlaceOrder)
    assert plan.command.bracket == Bracket(
        stop_loss=Decimal(20996), take_profit=Decimal(22000), time_in_force=TimeInForce.DAY
    )


def test_route_scale_out_becomes_targets_and_a_runner() -> None:
    plan = _routed(take_profits=TWO, trailing_stop_ticks=12, breakeven=True)

    assert isinstance(plan, PlaceOrder)
    bracket = plan.command.bracket
    assert bracket is not None
    assert bracket.targets == (Target(1, 20), Target(1, 40))
    assert (bracket.stop_loss_ticks, bracket.trailing, bracket.breakeven) == (12, True, True)
    assert bracket.plan(3) == ((1, 20), (1, 40), (1, None))


@pytest.mark.parametrize(
    ("changes", "field", "needle"),
    [
        ({"take_profits": TWO, "stop_loss_ticks": 8}, "take_profits", "cannot"),
        ({"trailing_stop_ticks": 8}, "trailing_stop_ticks", "cannot"),
    ],
)
def test_route_scale_out_without_order_strategies_is_denied(
    changes: dict[str, Any], field: str, needle: str
) -> None:
    plan = _routed(from_fill=False, reference_price=Decimal(21000), **changes)

    assert isinstance(plan, Denied)
    assert (plan.field, needle in plan.reason) == (field, True)


@pytest.mark.parametrize(
    ("changes", "field", "needle"),
    [
        ({"take_profits": [*TWO, {"ticks": 60, "quantity": 2}], "stop_loss_ticks": 8},
         "take_profits", "more than the order's 3"),
        ({"take_profits": TWO}, "take_profits", "no stop"),
        ({"take_profits": TWO, "stop_loss": Decimal(20000)}, "take_profits", "not a price"),
        ({"quantity": Decimal(1), "take_profits": TWO[:1], "stop_loss_ticks": 8,
          "breakeven": True}, "breakeven", "nothing is left"),
    ],
)  # fmt: skip
def test_route_scale_out_that_cannot_be_placed_is_denied(
    changes: dict[str, Any], field: str, needle: str
) -> None:
    plan = _routed(**changes)

    assert isinstance(plan, Denied)
    assert plan.field == field
    assert needle in plan.reason


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"take_profits": [{"ticks": 0, "quantity": 1}]}, "take_profits"),
        ({"take_profits": [{"ticks": 5}]}, "take_profits"),
        ({"take_profits": [{"ticks": 5, "quantity": 1}] * 4}, "take_profits"),
        ({"take_profits": TWO, "take_profit_ticks": 9}, "take_profits"),
        ({"trailing_stop_ticks": 8, "stop_loss_ticks": 8}, "trailing_stop_ticks"),
        ({"breakeven": True, "stop_loss_ticks": 8}, "breakeven"),
        ({"breakeven": True, "take_profits": TWO}, "breakeven"),
        ({"intent": "reverse", "trailing_stop_ticks": 8}, "trailing_stop_ticks"),
    ],
)
def test_validate_malformed_scale_out_is_denied(changes: dict[str, Any], field: str) -> None:
    checked = _checked(**changes)

    assert isinstance(checked, Denied)
    assert checked.field == field
