"""``[contracts] roll_days`` in the worker's own decisions: validate resolves a continuous
symbol on the configured day, and route dates the roll it tells of by the same calendar."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from tradebridge.domain.contracts import RollCalendar
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.domain.reports import PositionReport
from tradebridge.pipeline.route import BrokerView, PlaceOrder, route
from tradebridge.pipeline.validate import RawSignal, ValidSignal, validate

# MNQZ6 expires on 2026-12-18: by default MNQ1! is MNQH7 from 2026-12-10, 8 days before.
DEFAULT_ROLLED = date(2026, 12, 12)
LATE_MNQ = RollCalendar({"MNQ": 3})  # rolls on 2026-12-15
CID = ClientOrderId("tb-s1")


def _raw(**changes: Any) -> RawSignal:
    columns: dict[str, Any] = {
        "signal_id": "s1", "account_name": "A1", "instrument": "MNQ1!", "side": "buy",
        "order_type": "market", "quantity": Decimal(1),
    }  # fmt: skip
    columns.update(changes)
    return RawSignal(**columns)


def test_validate_continuous_symbol_before_the_configured_roll_is_the_old_month() -> None:
    default = validate(_raw(), today=DEFAULT_ROLLED, accounts={"A1"})
    late = validate(_raw(), today=DEFAULT_ROLLED, accounts={"A1"}, calendar=LATE_MNQ)

    assert isinstance(default, ValidSignal)
    assert isinstance(late, ValidSignal)
    assert str(default.contract) == "MNQH7"
    assert str(late.contract) == "MNQZ6"


def test_route_exit_after_the_configured_roll_dates_the_roll_by_the_calendar() -> None:
    today = date(2026, 12, 16)
    signal = validate(_raw(intent="exit", side=None, quantity=None), today=today,
                      accounts={"A1"}, calendar=LATE_MNQ)  # fmt: skip
    assert isinstance(signal, ValidSignal), signal
    held = BrokerView(positions=[PositionReport(AccountName("A1"), "MNQZ6", 2, Decimal(21000))])

    result = route(signal, held, CID, today=today, calendar=LATE_MNQ)

    assert isinstance(result, PlaceOrder), result
    assert result.command.contract.name == "MNQZ6"
    assert result.note is not None
    assert "before the roll on 2026-12-15" in result.note
