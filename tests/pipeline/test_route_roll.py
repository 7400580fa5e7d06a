"""Continuous symbols across the roll: an alert on ``MNQ1!`` after the front month moved on
must not leave the position held in the old month open, nor open the new month beside it."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from tradebridge.domain.enums import OrderType, Side
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.domain.reports import PositionReport
from tradebridge.pipeline.route import BrokerView, PlaceOrder, needs, route
from tradebridge.pipeline.validate import Denied, RawSignal, ValidSignal, validate

ROLLED = date(2026, 12, 10)  # MNQ1! is MNQH7 from today; MNQZ6 trades until Dec 18
CID = ClientOrderId("tb-s1")


def _signal(instrument: str = "MNQ1!", metadata: Any = None, **changes: Any) -> ValidSignal:
    columns: dict[str, Any] = {
        "signal_id": "s1", "account_name": "A1", "instrument": instrument, "side": None,
        "order_type": "market", "quantity": None, "metadata": metadata,
    }  # fmt: skip
    columns.update(changes)
    result = validate(RawSignal(**columns), today=ROLLED, accounts={"A1"})
    assert isinstance(result, ValidSignal), result
    return result


def _held(*positions: tuple[str, int]) -> BrokerView:
    return BrokerView(
        positions=[
            PositionReport(AccountName("A1"), name, qty, Decimal(21000)) for name, qty in positions
        ]
    )


@pytest.mark.parametrize(
    ("instrument", "metadata"),
    [
        ("MNQ1!", None),  # a strategy's INSERT names the continuous symbol
        ("CME_MINI:MNQ1!", None),
        ("MNQ", None),  # a bare root is the front month too
        ("MNQH7", {"webhook": {"symbol": "MNQ1!"}}),  # the webhook stored what it resolved
    ],
)
def test_route_exit_on_continuous_symbol_after_roll_closes_the_old_month(
    instrument: str, metadata: Any
) -> None:
    signal = _signal(instrument, metadata, intent="exit")

    result = route(signal, _held(("MNQZ6", 2)), CID, today=ROLLED)

    assert isinstance(result, PlaceOrder), result
    command = result.command
    assert (command.contract.name, command.side, command.quantity) == ("MNQZ6", Side.SELL, 2)
    assert command.order_type is OrderType.MARKET
    assert result.fit_legs
    assert result.exact
    assert result.note is not None
    assert "MNQZ6" in result.note


def test_route_partial_exit_on_continuous_symbol_after_roll_reduces_the_old_month() -> None:
    result = route(_signal(intent="exit", quantity=Decimal(1)), _held(("MNQZ6", 2)), CID,
                   today=ROLLED)  # fmt: skip

    assert isinstance(result, PlaceOrder), result
    command = result.command
    assert (command.contract.name, command.side, command.quantity) == ("MNQZ6", Side.SELL, 1)


def test_route_target_flat_on_continuous_symbol_after_roll_closes_the_old_month() -> None:
    signal = _signal(intent="target", target_position=Decimal(0))

    result = route(signal, _held(("MNQZ6", -3)), CID, today=ROLLED)

    assert isinstance(result, PlaceOrder), result
    command = result.command
    assert (command.contract.name, command.side, command.quantity) == ("MNQZ6", Side.BUY, 3)


@pytest.mark.parametrize(
    "changes",
    [
        {"intent": "order", "side": "sell", "quantity": Decimal(2)},  # a strategy's exit fill
        {"intent": "reverse", "side": "sell", "quantity": Decimal(2)},
        {"intent": "target", "target_position": Decimal(2)},  # would buy 2 MNQH7: long 4
        {"intent": "target", "target_position": Decimal(-1)},
    ],
)
def test_route_continuous_symbol_beside_an_old_month_position_is_denied(
    changes: dict[str, Any],
) -> None:
    signal = _signal(**changes)

    result = route(signal, _held(("MNQZ6", 2)), CID, today=ROLLED)

    assert isinstance(result, Denied), result
    assert not result.nothing_to_do
    assert "MNQZ6" in result.reason
    assert "MNQH7" in result.reason


def test_route_exit_on_continuous_symbol_with_two_months_held_is_denied() -> None:
    result = route(_signal(intent="exit"), _held(("MNQZ6", 1), ("MNQM7", 1)), CID, today=ROLLED)

    assert isinstance(result, Denied), result
    assert not result.nothing_to_do


def test_route_explicit_month_is_not_redirected_to_the_old_month() -> None:
    result = route(_signal("MNQH7", intent="exit"), _held(("MNQZ6", 2)), CID, today=ROLLED)

    assert isinstance(result, Denied)
    assert result.nothing_to_do


def test_route_continuous_symbol_without_old_month_position_is_unchanged() -> None:
    view = _held(("MNQH7", 1), ("MESZ6", 4))  # another product's old month does not count
    result = route(_signal(intent="exit"), view, CID, today=ROLLED)

    assert isinstance(result, PlaceOrder), result
    assert (result.command.contract.name, result.command.quantity) == ("MNQH7", 1)


def test_needs_reads_the_position_for_an_order_on_a_continuous_symbol() -> None:
    signal = _signal(intent="order", side="buy", quantity=Decimal(1))

    assert needs(signal).position
    assert not needs(_signal("MNQH7", intent="order", side="buy", quantity=Decimal(1))).position
