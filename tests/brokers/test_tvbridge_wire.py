"""The bridge's wire module and the adapter's pure helpers: no network."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tradebridge.brokers.tvbridge import wire as _wire
from tradebridge.brokers.tvbridge.broker import match_lookup, order_events, resolve_account
from tradebridge.domain.commands import Bracket, ModifyOrder, SubmitOrder
from tradebridge.domain.contracts import ContractSymbol
from tradebridge.domain.enums import OrderStatus, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.orders import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderRejected,
)
from tradebridge.domain.reports import LookupBaseline, LookupResult
from tradebridge.errors import BrokerRejected, InvalidInput, InvalidOrder, LookupAmbiguous

MNQ = ContractSymbol("MNQ", 2026, 12)
ACCOUNT = AccountName("PAAPEX1361890000010")
T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def _submit(**kw: object) -> SubmitOrder:
    fields: dict[str, object] = {
        "client_order_id": ClientOrderId("tb-sig-1"),
        "account": ACCOUNT,
        "contract": MNQ,
        "side": Side.BUY,
        "order_type": OrderType.LIMIT,
        "quantity": 2,
        "limit_price": Decimal("21000.25"),
    }
    fields.update(kw)
    return SubmitOrder(**fields)  # type: ignore[arg-type]


def _order(**kw: object) -> _wire.WireOrder:
    raw: dict[str, object] = {
        "id": "7",
        "instrument": "MNQZ6",
        "qty": 2,
        "side": "buy",
        "type": "limit",
        "status": "working",
        "limitPrice": 21000.25,
    }
    raw.update(kw)
    return _wire.WireOrder.parse(raw)


@pytest.mark.parametrize(
    ("order_type", "limit", "stop", "wire_type"),
    [
        (OrderType.MARKET, None, None, "market"),
        (OrderType.LIMIT, Decimal("21000.25"), None, "limit"),
        (OrderType.STOP, None, Decimal(21100), "stop"),
        (OrderType.STOP_LIMIT, Decimal(21101), Decimal(21100), "stoplimit"),
    ],
)
@pytest.mark.parametrize(("side", "wire_side"), [(Side.BUY, "buy"), (Side.SELL, "sell")])
def test_order_form_every_type_and_side_lowercase_enums(
    order_type: OrderType,
    limit: Decimal | None,
    stop: Decimal | None,
    wire_type: str,
    side: Side,
    wire_side: str,
) -> None:
    command = _submit(order_type=order_type, limit_price=limit, stop_price=stop, side=side)
    form = _wire.order_form(command, duration="Day", bid_ask=None)
    assert form["type"] == wire_type
    assert form["side"] == wire_side
    assert form["instrument"] == "MNQZ6"
    assert form["qty"] == "2"
    assert ("limitPrice" in form) == (limit is not None)
    assert ("stopPrice" in form) == (stop is not None)
    assert "currentBid" not in form


def test_order_form_bracket_and_bid_ask_plain_decimals() -> None:
    command = _submit(bracket=Bracket(Decimal("20990.00"), Decimal("21010.50")))
    form = _wire.order_form(
        command, duration="GTC", bid_ask=(Decimal("21000.00"), Decimal("21000.25"))
    )
    assert form["stopLoss"] == "20990"
    assert form["takeProfit"] == "21010.5"
    assert form["currentBid"] == "21000"
    assert form["currentAsk"] == "21000.25"
    assert form["durationType"] == "GTC"


def test_order_form_gtd_sends_duration_datetime() -> None:
    expires = T0 + timedelta(days=1)
    form = _wire.order_form(
        _submit(tif=TimeInForce.GTD, expire_time=expires), duration="gtd", bid_ask=None
    )
    assert form["durationDateTime"] == str(int(expires.timestamp()))


@pytest.mark.parametrize(
    ("tif", "advertised", "expected"),
    [
        (TimeInForce.DAY, ["Day", "GTC"], "Day"),
        (TimeInForce.GTC, ["Day", "GTC"], "GTC"),
        (TimeInForce.DAY, ["DAY"], "DAY"),
        (TimeInForce.GTC, ["gtc"], "gtc"),
    ],
)
def test_duration_id_advertised_keeps_server_case(
    tif: TimeInForce, advertised: list[str], expected: str
) -> None:
    assert _wire.duration_id(tif, advertised) == expected


def test_duration_id_not_advertised_invalid_order_lists_ids() -> None:
    with pytest.raises(InvalidOrder, match="Day, GTC"):
        _wire.duration_id(TimeInForce.IOC, ["Day", "GTC"])


def test_modify_form_qty_and_prices() -> None:
    command = ModifyOrder(ACCOUNT, BrokerOrderId("7"), 3, OrderType.LIMIT, Decimal("21000.5"))
    assert _wire.modify_form(command) == {"qty": "3", "limitPrice": "21000.5"}


@pytest.mark.parametrize(
    ("client_order_id", "expected"),
    [("tb-sig-1", "tb-sig-1"), ("tb-abc_DEF-r2", "tb-abc_DEF-r2")],
)
def test_request_id_short_ascii_kept(client_order_id: str, expected: str) -> None:
    assert _wire.request_id_for(client_order_id) == expected


@pytest.mark.parametrize("client_order_id", ["tb-" + "x" * 60, "tb-sig é", "tb/1?x=2"])
def test_request_id_long_or_unsafe_hashed_stable(client_order_id: str) -> None:
    first = _wire.request_id_for(client_order_id)
    assert first == _wire.request_id_for(client_order_id)
    assert first.isascii()
    assert first.isalnum()
    assert len(first) <= 32


def test_query_always_locale_en_and_request_id() -> None:
    assert _wire.query() == {"locale": "en"}
    assert _wire.query("abc") == {"locale": "en", "requestId": "abc"}


def test_unwrap_ok_returns_d() -> None:
    assert _wire.unwrap({"s": "ok", "d": {"orderId": "9"}}) == {"orderId": "9"}


@pytest.mark.parametrize(
    ("errmsg", "reason"), [("Insufficient funds", "error"), ("Too late", "TooLate")]
)
def test_unwrap_error_broker_rejected_with_text(errmsg: str, reason: str) -> None:
    with pytest.raises(BrokerRejected) as caught:
        _wire.unwrap({"s": "error", "errmsg": errmsg})
    assert caught.value.reason == reason
    assert caught.value.text == errmsg


@pytest.mark.parametrize("body", [None, "<html>bad gateway</html>", [1, 2], {"d": 1}, {"s": "x"}])
def test_unwrap_not_an_envelope_unparseable(body: object) -> None:
    with pytest.raises(_wire.UnparseableAnswer):
        _wire.unwrap(body)


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("placing", 0, OrderStatus.SUBMITTED),
        ("inactive", 0, OrderStatus.WORKING),
        ("working", 0, OrderStatus.WORKING),
        ("working", 1, OrderStatus.PARTIALLY_FILLED),
        ("rejected", 0, OrderStatus.REJECTED),
        ("filled", 2, OrderStatus.FILLED),
        ("canceled", 0, OrderStatus.CANCELLED),
    ],
)
def test_to_status_bridge_statuses_ours(status: str, filled: int, expected: OrderStatus) -> None:
    assert _wire.to_status(_order(status=status, filledQty=filled)) is expected


def test_to_order_report_fields() -> None:
    wire = _order(status="filled", filledQty=2, avgPrice=21000.25, createTime=1764082800)
    report = _wire.to_order_report(wire, ACCOUNT, ClientOrderId("tb-sig-1"))
    assert report.broker_order_id == "7"
    assert report.order_type is OrderType.LIMIT
    assert report.avg_fill_price == Decimal("21000.25")
    assert report.ts_created == datetime.fromtimestamp(1764082800, UTC)


def test_to_position_report_sell_side_negative() -> None:
    position = _wire.parse_positions(
        [{"id": 1, "instrument": "MNQZ6", "qty": 3, "side": "sell", "avgPrice": 21000}]
    )[0]
    assert _wire.to_position_report(position, ACCOUNT).net_qty == -3


def test_parse_quote_picks_instrument() -> None:
    data = [
        {"s": "ok", "n": "MESZ6", "v": {"bid": 1, "ask": 2}},
        {"s": "ok", "n": "MNQZ6", "v": {"bid": 21000, "ask": 21000.25, "lp": 21000}},
    ]
    quote = _wire.parse_quote(data, "MNQZ6")
    assert (quote.bid, quote.ask) == (Decimal(21000), Decimal("21000.25"))


# --- account resolution ----------------------------------------------------------------

LISTED = [
    _wire.WireAccount(id="D200010", name="PAAPEX1361890000010"),
    _wire.WireAccount(id="D200011", name="PAAPEX1361890000011"),
]


def test_resolve_account_by_name_bridge_id() -> None:
    assert resolve_account(ACCOUNT, None, LISTED) == "D200010"


def test_resolve_account_configured_id_kept() -> None:
    assert resolve_account(ACCOUNT, "D200010", LISTED) == "D200010"


def test_resolve_account_name_configured_as_id_refused_with_right_id() -> None:
    with pytest.raises(InvalidInput, match=r"ACCOUNT_NAME_USED_AS_ID.*D200010"):
        resolve_account(ACCOUNT, "PAAPEX1361890000010", LISTED)


def test_resolve_account_unknown_none() -> None:
    assert resolve_account(AccountName("NOPE"), None, LISTED) is None
    assert resolve_account(ACCOUNT, "200010", LISTED) is None


# --- lookup matching -------------------------------------------------------------------


BEFORE = LookupBaseline.of(["5"])  # the account's orders just before the submit


def _match(orders: list[_wire.WireOrder], **kw: Any) -> LookupResult:
    kw.setdefault("baseline", BEFORE)
    return match_lookup(_submit(**kw.pop("submit", {})), "tb-sig-1", T0, orders, **kw)


def test_match_lookup_echoed_request_id_exact() -> None:
    orders = [_order(id="5", requestId="other"), _order(id="6", requestId="tb-sig-1")]
    result = _match(orders)
    assert result.found is not None
    assert (result.found.broker_order_id, result.probable) == ("6", False)


def test_match_lookup_one_new_order_of_the_same_shape_probable() -> None:
    result = _match([_order(id="5"), _order(id="6", qty=1), _order(id="8")])
    assert result.found is not None
    assert (result.found.broker_order_id, result.probable) == ("8", True)


def test_match_lookup_two_new_orders_of_the_same_shape_ambiguous_never_the_earliest() -> None:
    with pytest.raises(LookupAmbiguous) as caught:
        _match([_order(id="6"), _order(id="8")])
    assert caught.value.candidates == ("6", "8")


def test_match_lookup_order_in_the_baseline_never_adopted() -> None:
    # The resting order of another row, there before the submit: the lost one is absent.
    assert _match([_order(id="5")]).found is None


def test_match_lookup_id_at_or_below_the_high_water_mark_existed_before() -> None:
    # Gone from /orders before the submit (now in history), but its id is older.
    assert _match([_order(id="4")], baseline=LookupBaseline.of(["5"])).found is None


def test_match_lookup_without_baseline_or_creation_time_ambiguous_not_absent() -> None:
    with pytest.raises(LookupAmbiguous):
        _match([_order(id="9")], baseline=None)


def test_match_lookup_without_baseline_created_after_the_submit_probable() -> None:
    order = _order(id="9", createTime=int((T0 + timedelta(seconds=1)).timestamp()))
    result = _match([order], baseline=None)
    assert result.found is not None
    assert result.probable


def test_match_lookup_created_just_before_the_submit_unsure() -> None:
    order = _order(id="9", createTime=int((T0 - timedelta(seconds=1)).timestamp()))
    with pytest.raises(LookupAmbiguous):
        _match([order], baseline=None)


def test_match_lookup_excluded_order_skipped() -> None:
    assert _match([_order(id="7")], exclude={"7"}).found is None


@pytest.mark.parametrize(
    "change",
    [
        {"side": "sell"},
        {"type": "stop", "stopPrice": 21000.25},
        {"limitPrice": 21000.5},
        {"instrument": "MNQH7"},
        {"parentId": "3"},
        {"createTime": int((T0 - timedelta(minutes=5)).timestamp())},
        {"requestId": "someone-else"},
        {"stopLoss": 20990, "takeProfit": 21010},  # a bracket; the submit has none
    ],
)
def test_match_lookup_differing_order_absent(change: dict[str, object]) -> None:
    assert _match([_order(**change)]).found is None


def test_match_lookup_bracket_compared_through_the_legs() -> None:
    bracket = {"bracket": Bracket(Decimal(20990), Decimal(21010))}
    legs = [
        _order(id="10", parentId="8", side="sell", type="stop", stopPrice=20990, limitPrice=None),
        _order(id="11", parentId="8", side="sell", type="limit", limitPrice=21010),
    ]
    other = [
        _order(id="13", parentId="12", side="sell", type="stop", stopPrice=20980, limitPrice=None),
    ]
    result = _match([_order(id="8"), *legs, _order(id="12"), *other], submit=bracket)
    assert result.found is not None
    assert result.found.broker_order_id == "8"


def test_match_lookup_bracket_expected_but_no_legs_visible_unsure() -> None:
    with pytest.raises(LookupAmbiguous):
        _match([_order(id="8")], submit={"bracket": Bracket(Decimal(20990), None)})


# --- events from polling --------------------------------------------------------------


def test_order_events_new_working_accepted() -> None:
    events = order_events(None, _order(), T0)
    assert [type(e) for e in events] == [OrderAccepted]


def test_order_events_partial_fill_price_from_averages() -> None:
    before = _order(filledQty=1, avgPrice=21000)
    after = _order(filledQty=2, avgPrice=21000.5)
    events = order_events(before, after, T0)
    # The bridge names no fill: the order and the quantity filled so far name this one; the
    # running totals go along (another poller may have seen the span differently).
    assert events == [
        OrderFilled(
            1, Decimal(21001), T0, f"{after.id}@2", total_qty=2, total_avg=Decimal("21000.5")
        )
    ]


def test_order_events_cancel_and_reject_and_modify() -> None:
    assert order_events(_order(), _order(status="canceled"), T0) == [OrderCancelled(T0)]
    rejected = order_events(_order(status="placing"), _order(status="rejected", message="no"), T0)
    assert rejected == [OrderRejected("rejected", "no", T0)]
    modified = order_events(_order(), _order(qty=3), T0)
    assert modified == [OrderModified(3, Decimal("21000.25"), None, T0)]


def test_order_events_unchanged_nothing() -> None:
    assert order_events(_order(), _order(), T0) == []


def test_today_in_tests_is_a_date() -> None:
    # The wire module never reads the clock: contracts decide expiry from a given date.
    assert not MNQ.is_expired(date(2026, 11, 25))
