"""Rows as the deployment tradebridge replaces wrote them, and a limit on the wrong side of
the market (``[orders] marketable_limit``): issue 11, part B (docs/migrating.md)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from tradebridge.domain.enums import OrderType, Side
from tradebridge.domain.ids import ClientOrderId
from tradebridge.pipeline.market import Market
from tradebridge.pipeline.route import BrokerView, MarketableLimit, PlaceOrder, needs, route
from tradebridge.pipeline.validate import Denied, RawSignal, ValidSignal, validate

TODAY = date(2026, 11, 25)
CID = ClientOrderId("tb-s1")
# The previous deployment's insert: status set, 0.0 meaning "no bracket", limit by default.
OLD_ROW = RawSignal(
    signal_id="s1", account_name="A1", instrument="MNQZ6", side="buy", order_type="limit",
    quantity=Decimal(1), price=Decimal("21000.00"), stop_loss=Decimal("0.0"),
    take_profit=Decimal("0.0"),
)  # fmt: skip
MARKET = BrokerView(market=Market(bid=Decimal("20999.75"), ask=Decimal("21000.00")))


def _valid(**changes: Any) -> ValidSignal:
    result = validate(replace(OLD_ROW, **changes), today=TODAY, accounts={"A1"})
    assert isinstance(result, ValidSignal), result
    return result


def _route(signal: ValidSignal, mode: MarketableLimit, view: BrokerView = MARKET) -> Any:
    return route(signal, view, CID, today=TODAY, marketable_limit=mode)


def test_old_row_zero_brackets_mean_none() -> None:
    signal = _valid()
    plan = _route(signal, "fill")
    assert isinstance(plan, PlaceOrder)
    assert plan.command.bracket is None
    assert plan.command.order_type is OrderType.LIMIT


def test_old_stop_row_with_only_price_uses_it_as_the_trigger() -> None:
    signal = _valid(order_type="stop", price=Decimal("21050.25"))
    plan = _route(signal, "fill")
    assert isinstance(plan, PlaceOrder)
    assert plan.command.order_type is OrderType.STOP
    assert plan.command.stop_price == Decimal("21050.25")
    assert plan.command.limit_price is None


def test_stop_row_with_its_own_stop_price_ignores_price() -> None:
    signal = _valid(order_type="stop", price=Decimal(21100), stop_price=Decimal(21050))
    assert (signal.stop_price, signal.limit_price) == (Decimal(21050), None)


def test_stop_limit_row_still_needs_both_prices() -> None:
    result = validate(replace(OLD_ROW, order_type="stoplimit"), today=TODAY, accounts={"A1"})
    assert isinstance(result, Denied)
    assert "needs a stop_price" in result.reason


# side, limit, mode -> (order type, limit price, stop price) or the start of a denial.
MATRIX = [
    # A buy limit above the ask / a sell limit below the bid: marketable.
    ("buy", "21010.00", "fill", (OrderType.LIMIT, "21010.00", None)),
    ("buy", "21010.00", "stop", (OrderType.STOP, None, "21010.00")),
    ("buy", "21010.00", "deny", "the buy limit 21010.00 is above the ask 21000.00"),
    ("sell", "20990.00", "fill", (OrderType.LIMIT, "20990.00", None)),
    ("sell", "20990.00", "stop", (OrderType.STOP, None, "20990.00")),
    ("sell", "20990.00", "deny", "the sell limit 20990.00 is below the bid 20999.75"),
    # On the right side, or at the price itself: a limit whatever the mode.
    ("buy", "20990.00", "stop", (OrderType.LIMIT, "20990.00", None)),
    ("buy", "21000.00", "stop", (OrderType.LIMIT, "21000.00", None)),
    ("buy", "21000.00", "deny", (OrderType.LIMIT, "21000.00", None)),
    ("sell", "21010.00", "deny", (OrderType.LIMIT, "21010.00", None)),
    ("sell", "20999.75", "stop", (OrderType.LIMIT, "20999.75", None)),
]


@pytest.mark.parametrize(("side", "limit", "mode", "expected"), MATRIX)
def test_marketable_limit_setting_decides_a_limit_through_the_market(
    side: str, limit: str, mode: MarketableLimit, expected: tuple[Any, ...] | str
) -> None:
    plan = _route(_valid(side=side, price=Decimal(limit)), mode)
    if isinstance(expected, str):
        assert isinstance(plan, Denied)
        assert plan.reason.startswith(expected)
        assert "orders.marketable_limit = deny" in plan.reason
        assert plan.field == "price"
        return
    assert isinstance(plan, PlaceOrder)
    kind, limit_price, stop_price = expected
    command = plan.command
    assert command.order_type is kind
    assert command.limit_price == (None if limit_price is None else Decimal(limit_price))
    assert command.stop_price == (None if stop_price is None else Decimal(stop_price))
    assert command.side is Side(side)
    converted = kind is OrderType.STOP
    assert (plan.note is not None) is converted
    if converted:
        assert plan.note is not None
        assert f"sent as a stop at {limit}" in plan.note


def test_marketable_limit_stop_keeps_the_bracket_measured_from_the_same_price() -> None:
    signal = _valid(
        price=Decimal("21010.00"), stop_loss=Decimal("20990.00"), take_profit=Decimal(21050)
    )
    plan = _route(signal, "stop")
    assert isinstance(plan, PlaceOrder)
    assert plan.command.order_type is OrderType.STOP
    assert plan.command.bracket is not None
    assert plan.command.bracket.stop_loss == Decimal("20990.00")
    assert plan.command.bracket.take_profit == Decimal(21050)


@pytest.mark.parametrize("mode", ["stop", "deny"])
def test_marketable_limit_without_a_quote_or_reference_goes_as_given(
    mode: MarketableLimit,
) -> None:
    plan = _route(_valid(price=Decimal("21010.00")), mode, BrokerView())
    assert isinstance(plan, PlaceOrder)
    assert plan.command.order_type is OrderType.LIMIT
    assert plan.note is None


def test_marketable_limit_judged_against_reference_price_without_a_quote() -> None:
    signal = _valid(price=Decimal("21010.00"), reference_price=Decimal("21000.00"))
    plan = _route(signal, "deny", BrokerView())
    assert isinstance(plan, Denied)
    assert "above the reference_price 21000.00" in plan.reason


def test_marketable_limit_applies_to_a_reverse_from_flat_entry() -> None:
    signal = _valid(intent="reverse", price=Decimal("21010.00"))
    plan = _route(signal, "stop")
    assert isinstance(plan, PlaceOrder)
    assert plan.command.order_type is OrderType.STOP


@pytest.mark.parametrize(
    ("mode", "order_type", "quote"),
    [
        ("fill", "limit", False),
        ("stop", "limit", True),
        ("deny", "limit", True),
        ("stop", "market", False),
        ("stop", "stop", False),
    ],
)
def test_needs_a_quote_only_to_judge_a_limit(
    mode: MarketableLimit, order_type: str, quote: bool
) -> None:
    changes: dict[str, Any] = {"order_type": order_type}
    if order_type == "stop":
        changes["stop_price"] = Decimal(21050)
    assert needs(_valid(**changes), marketable_limit=mode).quote is quote
