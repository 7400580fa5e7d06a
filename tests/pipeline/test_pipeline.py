"""validate → route → risk: every denial reason, and the commands that come out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from tradebridge.domain.enums import OrderStatus, OrderType, Side
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.reports import OrderStatusReport, PositionReport
from tradebridge.pipeline.risk import AccountState, OrderFacts, RiskLimits, Rules, check_order
from tradebridge.pipeline.route import (
    BrokerView,
    CancelOrders,
    FlattenAccount,
    PlaceOrder,
    route,
)
from tradebridge.pipeline.validate import Denied, RawSignal, ValidSignal, validate

TODAY = date(2026, 11, 25)
ACCOUNTS = {"A1"}
BASE = RawSignal(
    signal_id="s1", account_name="A1", instrument="MNQZ6", side="buy", order_type="market",
    quantity=Decimal(1),
)  # fmt: skip
CID = ClientOrderId("tb-s1")


def _valid(**changes: Any) -> ValidSignal:
    result = validate(replace(BASE, **changes), today=TODAY, accounts=ACCOUNTS)
    assert isinstance(result, ValidSignal), result
    return result


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"side": "up"}, "unknown side 'up'"),
        ({"side": None}, "side is missing"),
        ({"order_type": "trailing"}, "unknown order_type 'trailing'"),
        # A price without an order type: placed as a market order, the price dropped.
        (
            {"order_type": None, "price": Decimal(21000)},
            (
                "order_type is missing and the row has a price: name it (limit, stop or stoplimit; "
                "a market order has no price)"
            ),
        ),
        ({"order_type": " ", "stop_price": Decimal(21000)}, "order_type is missing"),
        ({"intent": "hedge"}, "unknown intent 'hedge'"),
        ({"quantity": Decimal(0)}, "quantity 0 must be a positive"),
        ({"quantity": Decimal(-2)}, "quantity -2 must be a positive"),
        ({"quantity": Decimal("1.5")}, "quantity 1.5 is fractional"),
        ({"quantity": None}, "quantity is missing"),
        ({"order_type": "limit"}, "a limit order needs a price"),
        ({"order_type": "stop"}, "a stop order needs a stop_price"),
        ({"order_type": "stoplimit", "price": Decimal(21000)}, "needs a stop_price"),
        ({"account_name": "NOPE"}, "unknown account 'NOPE'"),
        ({"account_name": None}, "account_name is missing"),
        ({"instrument": "MNQZ5"}, "expired on 2025-12-19"),
        ({"instrument": "XYZ1!"}, "unknown product root 'XYZ'"),
        ({"instrument": None}, "instrument is missing"),
        ({"order_type": "limit", "price": Decimal("21000.1")}, "not on the tick grid"),
        (
            {"stop_loss": Decimal(21100), "take_profit": Decimal(20900)},
            "on the wrong sides for a buy",
        ),
        ({"stop_loss": Decimal(1), "stop_loss_ticks": 4}, "not both"),
        ({"stop_loss_ticks": -4}, "must be a positive number of ticks"),
        ({"time_in_force": "forever"}, "unknown time_in_force"),
        ({"intent": "target"}, "needs target_position"),
        ({"intent": "target", "target_position": Decimal("0.5")}, "whole number"),
        ({"signal_id": "breakout-sl"}, "ends with '-sl', which is reserved for bracket legs"),
        ({"signal_id": "es-0930-tp"}, "ends with '-tp', which is reserved for bracket legs"),
        ({"signal_id": "spread-leg", "intent": "flatten"}, "ends with '-leg', which is reserved"),
    ],
)
def test_validate_bad_row_is_denied_with_precise_reason(
    changes: dict[str, Any], reason: str
) -> None:
    result = validate(replace(BASE, **changes), today=TODAY, accounts=ACCOUNTS)

    assert isinstance(result, Denied)
    assert reason in result.reason


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"order_type": "limit", "price": Decimal("1e28")}, "price"),
        ({"order_type": "stop", "stop_price": Decimal("1e30")}, "stop_price"),
        ({"stop_loss": Decimal("1e40")}, "stop_loss"),
        ({"take_profit": Decimal("123456789012345678901234567890.25")}, "take_profit"),
        ({"order_type": "limit", "price": Decimal(10) ** 9}, "price"),
    ],
    ids=["limit-price", "stop-price", "stop-loss", "take-profit", "at-the-bound"],
)
def test_validate_price_too_large_is_denied_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    result = validate(replace(BASE, **changes), today=TODAY, accounts=ACCOUNTS)

    assert isinstance(result, Denied)
    assert result.field == field
    assert result.reason.startswith(f"{field} ")
    assert "is too large: a price must be below 1,000,000,000" in result.reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"stop_loss_ticks": 2_000_000_000}, "stop_loss_ticks 2000000000 is too far"),
        ({"take_profit_ticks": 1_000_001}, "take_profit_ticks 1000001 is too far"),
        (
            {"order_type": "limit", "price": Decimal(21000), "stop_loss_ticks": 100_000},
            ("stop_loss_ticks 100000 puts the leg 25000.00 points from the entry 21000, at or "
             "below zero: use at most 83,999 ticks"),
        ),
        (
            {"reference_price": Decimal(21000), "trailing_stop_ticks": 84_000},
            "trailing_stop_ticks 84000 puts the leg",
        ),
        (
            {"side": "sell", "order_type": "stop", "stop_price": Decimal(21000),
             "take_profit_ticks": 84_000},
            "take_profit_ticks 84000 puts the leg",
        ),
        (
            {"take_profits": [{"ticks": 8, "quantity": 1}, {"ticks": 10**30, "quantity": 1}],
             "quantity": Decimal(2), "stop_loss_ticks": 8},
            "take_profits[1].ticks 1000000000000000000000000000000 is too far",
        ),
        (
            {"take_profits": [{"ticks": 8, "quantity": 10**12}], "stop_loss_ticks": 8},
            "take_profits[0].quantity 1000000000000 is more than 100,000 contracts",
        ),
        (
            {"side": "sell", "order_type": "limit", "price": Decimal(21000),
             "take_profits": [{"ticks": 8, "quantity": 1}, {"ticks": 84_000, "quantity": 1}],
             "quantity": Decimal(2), "stop_loss_ticks": 8},
            "take_profits 84000 puts the leg",
        ),
    ],
    ids=["over-the-bound", "target-over-the-bound", "limit-entry", "trailing", "short-target",
         "scale-out-over-the-bound", "scale-out-quantity", "scale-out-short-target"],
)  # fmt: skip
def test_validate_leg_ticks_too_far_or_past_zero_are_denied(
    changes: dict[str, Any], reason: str
) -> None:
    result = validate(replace(BASE, **changes), today=TODAY, accounts=ACCOUNTS)

    assert isinstance(result, Denied)
    assert reason in result.reason


def test_validate_leg_ticks_short_of_zero_or_above_the_entry_pass() -> None:
    below = _valid(order_type="limit", price=Decimal(21000), stop_loss_ticks=83_999)
    above = _valid(side="sell", reference_price=Decimal(21000), stop_loss_ticks=100_000)

    assert (below.stop_loss_ticks, above.stop_loss_ticks) == (83_999, 100_000)


@pytest.mark.parametrize("value", [None, Decimal(0)])
def test_validate_zero_or_null_stop_loss_means_none(value: Decimal | None) -> None:
    signal = _valid(stop_loss=value, take_profit=value)

    assert (signal.stop_loss, signal.take_profit, signal.has_bracket) == (None, None, False)


def test_validate_symbol_map_and_continuous_symbol_resolve() -> None:
    result = validate(replace(BASE, instrument="CME_MINI:NQ1!"), today=TODAY,
                      accounts=ACCOUNTS, root_map={"NQ": "MNQ"})  # fmt: skip

    assert isinstance(result, ValidSignal)
    assert result.contract is not None
    assert result.contract.name == "MNQZ6"


@pytest.mark.parametrize(
    ("side", "sl", "tp", "reason"),
    [
        ("buy", Decimal(21010), None, "stop_loss 21010 is on the wrong side"),
        ("buy", None, Decimal(20990), "take_profit 20990 is on the wrong side"),
        ("sell", Decimal(20990), None, "stop_loss 20990 is on the wrong side"),
    ],
)
def test_route_bracket_on_wrong_side_of_entry_is_denied(
    side: str, sl: Decimal | None, tp: Decimal | None, reason: str
) -> None:
    signal = _valid(side=side, order_type="limit", price=Decimal(21000), stop_loss=sl,
                    take_profit=tp)  # fmt: skip

    result = route(signal, BrokerView(), CID, today=TODAY)

    assert isinstance(result, Denied)
    assert reason in result.reason


@pytest.mark.parametrize(
    ("changes", "quote", "sl", "tp"),
    [
        ({"order_type": "limit", "price": Decimal(21000)}, None, "20998.00", "21003.00"),
        ({"reference_price": Decimal("21000.1")}, None, "20998.00", "21003.00"),
        ({}, Decimal("21000.00"), "20998.00", "21003.00"),
        ({"side": "sell", "reference_price": Decimal(21000)}, None, "21002.00", "20997.00"),
    ],
)
def test_route_ticks_become_absolute_bracket_prices(
    changes: dict[str, Any], quote: Decimal | None, sl: str, tp: str
) -> None:
    signal = _valid(stop_loss_ticks=8, take_profit_ticks=12, **changes)

    result = route(signal, BrokerView(quote=quote), CID, today=TODAY)

    assert isinstance(result, PlaceOrder)
    assert result.command.bracket is not None
    assert (result.command.bracket.stop_loss, result.command.bracket.take_profit) == (
        Decimal(sl),
        Decimal(tp),
    )


def test_route_ticks_without_any_entry_reference_are_denied() -> None:
    result = route(_valid(stop_loss_ticks=8), BrokerView(), CID, today=TODAY)

    assert isinstance(result, Denied)
    assert "need an entry reference" in result.reason


def _position(qty: int) -> BrokerView:
    return BrokerView(positions=[PositionReport(AccountName("A1"), "MNQZ6", qty, Decimal(1))])


@pytest.mark.parametrize(
    ("intent", "extra", "position", "side", "qty"),
    [
        ("exit", {"quantity": None}, 3, Side.SELL, 3),
        ("exit", {"quantity": None}, -2, Side.BUY, 2),
        ("exit", {"quantity": Decimal(1)}, 3, Side.SELL, 1),
        ("exit", {"quantity": Decimal(5)}, -2, Side.BUY, 2),
        ("reverse", {"side": "sell"}, 2, Side.SELL, 4),
        ("reverse", {"side": "buy"}, 0, Side.BUY, 1),
        ("target", {"target_position": Decimal(-1)}, 2, Side.SELL, 3),
        ("target", {"target_position": Decimal(5)}, 2, Side.BUY, 3),
    ],
)
def test_route_position_intents_order_the_difference(
    intent: str, extra: dict[str, Any], position: int, side: Side, qty: int
) -> None:
    signal = _valid(intent=intent, **{"side": None, **extra})

    result = route(signal, _position(position), CID, today=TODAY)

    assert isinstance(result, PlaceOrder)
    assert (result.command.side, result.command.quantity) == (side, qty)
    assert result.command.order_type is OrderType.MARKET


@pytest.mark.parametrize(
    ("intent", "extra", "position", "fit"),
    [
        ("exit", {"quantity": None}, 3, True),
        ("exit", {"quantity": Decimal(1)}, 3, True),
        ("reverse", {"side": "sell"}, 2, True),
        ("reverse", {"side": "buy"}, 0, False),
        ("target", {"target_position": Decimal(1)}, 2, True),
        ("target", {"target_position": Decimal(0)}, -2, True),
        ("target", {"target_position": Decimal(-1)}, 2, True),
        ("target", {"target_position": Decimal(5)}, 2, False),
        ("target", {"target_position": Decimal(-1)}, 0, False),
        ("order", {"side": "sell"}, 2, False),
    ],
)
def test_route_orders_that_close_reduce_or_turn_the_position_fit_the_legs(
    intent: str, extra: dict[str, Any], position: int, fit: bool
) -> None:
    signal = _valid(intent=intent, **{"side": None, **extra})

    result = route(signal, _position(position), CID, today=TODAY)

    assert isinstance(result, PlaceOrder)
    assert result.fit_legs is fit


def test_route_reverse_to_the_side_already_held_is_nothing_to_do() -> None:
    result = route(_valid(intent="reverse"), _position(2), CID, today=TODAY)

    assert isinstance(result, Denied)
    assert result.reason.startswith("nothing to do: reverse to buy but already long 2")


def test_route_cancel_and_flatten_cover_working_orders_and_positions() -> None:
    working = OrderStatusReport(BrokerOrderId("9"), AccountName("A1"), "MNQZ6", Side.BUY,
                                OrderType.LIMIT, 1, OrderStatus.WORKING)  # fmt: skip
    view = BrokerView(
        positions=[PositionReport(AccountName("A1"), "MESZ6", 1, None)], working=[working]
    )

    cancel = route(_valid(intent="cancel"), view, CID, today=TODAY)
    flatten = route(_valid(intent="flatten", instrument=None), view, CID, today=TODAY)

    assert isinstance(cancel, CancelOrders)
    assert [c.broker_order_id for c in cancel.commands] == ["9"]
    assert isinstance(flatten, FlattenAccount)
    assert [c.contract.name for c in flatten.commands] == ["MESZ6", "MNQZ6"]


NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("limits", "rules", "qty", "position", "reason"),
    [
        (RiskLimits(kill_switch=True), Rules(), 1, 0, "kill switch is on"),
        (RiskLimits(), Rules(max_order_qty=2), 3, 0, "quantity 3 exceeds the limit of 2"),
        (RiskLimits(), Rules(max_position=3), 2, 2, "would be +4"),
    ],
)
def test_risk_limit_breach_is_denied(
    limits: RiskLimits, rules: Rules, qty: int, position: int, reason: str
) -> None:
    plan = route(_valid(quantity=Decimal(qty)), _position(position), CID, today=TODAY)
    assert isinstance(plan, PlaceOrder)

    _, result = check_order(OrderFacts(plan.command, NOW, position=position), AccountState(),
                            rules, limits)  # fmt: skip

    assert result is not None
    assert reason in result.reason


def test_risk_reducing_order_passes_even_with_kill_switch() -> None:
    plan = route(_valid(intent="exit", side=None), _position(5), CID, today=TODAY)
    assert isinstance(plan, PlaceOrder)

    rules = Rules(max_order_qty=1, max_position=1)
    facts = OrderFacts(plan.command, NOW, position=5)
    _, result = check_order(facts, AccountState(), rules, RiskLimits(kill_switch=True))

    assert result is None
