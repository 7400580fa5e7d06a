"""The TradingView bridge dialect: placing, modifying, cancelling and listing orders."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from _bridge_support import DEMO_ACCOUNT, Bridge, running_bridge

ORDERS = f"/accounts/{DEMO_ACCOUNT}/orders"


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    with running_bridge() as running:
        yield running


def error_of(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    assert payload["s"] == "error", payload
    message: str = payload["errmsg"]
    return message


def below_market(bridge: Bridge, points: int = 500) -> str:
    return str(bridge.quote_last(bridge.front) - points)


# --- placing --------------------------------------------------------------------------------


def test_place_market_order_lowercase_answers_string_order_id_and_fills(bridge: Bridge) -> None:
    order_id = bridge.place_ok(currentAsk="1", currentBid="1", durationType="Day")
    assert order_id.isdigit()
    order = bridge.order(order_id)
    assert order["status"] == "filled"
    assert order["filledQty"] == 1
    assert order["avgPrice"] > 0
    assert (order["side"], order["type"], order["instrument"]) == ("buy", "market", bridge.front)
    assert order["duration"]["type"] == "Day"


@pytest.mark.parametrize(
    ("order_type", "prices"),
    [
        ("limit", {"limitPrice": -500}),
        ("stop", {"stopPrice": 500}),
        ("stoplimit", {"stopPrice": 500, "limitPrice": 501}),
    ],
)
def test_place_resting_order_types_are_working_with_their_prices(
    bridge: Bridge, order_type: str, prices: dict[str, int]
) -> None:
    last = bridge.quote_last(bridge.front)
    form = {name: str(last + offset) for name, offset in prices.items()}
    order = bridge.order(bridge.place_ok(type=order_type, **form))
    assert order["status"] == "working"
    assert order["type"] == order_type
    for name, offset in prices.items():
        assert order[name] == last + offset


@pytest.mark.parametrize(
    ("field", "value"), [("side", "Buy"), ("type", "Market"), ("side", "SELL")]
)
@pytest.mark.parametrize("mode", ["error_200", "http_404"])
def test_place_capitalised_enum_answers_per_switch(
    bridge: Bridge, mode: str, field: str, value: str
) -> None:
    bridge.server.config.capitalised_enums = mode  # type: ignore[assignment]
    answer = bridge.place(**{field: value})
    if mode == "http_404":
        assert answer.status_code == 404
    else:
        assert "lowercase" in error_of(answer)
    assert bridge.d(ORDERS) == []


@pytest.mark.parametrize(("field", "value"), [("side", "hold"), ("type", "trailingstop")])
def test_place_unknown_enum_answers_200_error(bridge: Bridge, field: str, value: str) -> None:
    bridge.server.config.capitalised_enums = "http_404"
    assert value in error_of(bridge.place(**{field: value}))


@pytest.mark.parametrize("duration", ["day", "GTD", "Week", "DAY"])
def test_place_unadvertised_duration_answers_error_listing_ids(
    bridge: Bridge, duration: str
) -> None:
    message = error_of(bridge.place(durationType=duration))
    assert "Day, GTC" in message


def test_place_gtc_duration_is_kept_on_the_order(bridge: Bridge) -> None:
    order_id = bridge.place_ok(type="limit", limitPrice=below_market(bridge), durationType="GTC")
    assert bridge.order(order_id)["duration"]["type"] == "GTC"


@pytest.mark.parametrize(
    ("form", "missing"),
    [
        ({}, "currentAsk, currentBid"),
        ({"currentAsk": "1"}, "currentBid"),
        ({"currentBid": "1"}, "currentAsk"),
    ],
)
def test_place_without_bid_ask_when_required_answers_error_naming_them(
    bridge: Bridge, form: dict[str, str], missing: str
) -> None:
    bridge.server.config.require_bid_ask = True
    assert error_of(bridge.place(**form)).endswith(missing)


def test_place_with_bid_ask_when_required_is_accepted(bridge: Bridge) -> None:
    bridge.server.config.require_bid_ask = True
    bridge.place_ok(currentAsk="21000.5", currentBid="21000.25")


@pytest.mark.parametrize("field", ["instrument", "qty", "side", "type"])
def test_place_missing_required_field_answers_error_naming_it(bridge: Bridge, field: str) -> None:
    answer = bridge.place(**{field: ""})
    assert error_of(answer) == f"missing required field: {field}"


@pytest.mark.parametrize(
    ("form", "needle"),
    [
        ({"type": "limit"}, "limitPrice"),
        ({"type": "stop"}, "stopPrice"),
        ({"type": "stoplimit", "limitPrice": "1"}, "stopPrice"),
        ({"qty": "0"}, "qty"),
        ({"qty": "1.5"}, "qty"),
        ({"qty": "many"}, "qty"),
        ({"type": "limit", "limitPrice": "cheap"}, "limitPrice"),
    ],
)
def test_place_malformed_form_answers_error_naming_field(
    bridge: Bridge, form: dict[str, str], needle: str
) -> None:
    assert needle in error_of(bridge.place(**form))


@pytest.mark.parametrize("instrument", ["MNQZ5", "FOOZ6", "MNQ1!"])
def test_place_unknown_or_expired_instrument_answers_error(bridge: Bridge, instrument: str) -> None:
    assert error_of(bridge.place(instrument=instrument))
    assert bridge.d(ORDERS) == []


def test_place_json_body_answers_error_about_form_encoding(bridge: Bridge) -> None:
    answer = bridge.http.post(
        ORDERS,
        json={"instrument": bridge.front, "qty": 1, "side": "buy", "type": "market"},
        headers=bridge.headers(),
    )
    assert "form-encoded" in error_of(answer)


@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_place_form_body_without_form_content_type_answers_error(
    bridge: Bridge, content_type: str | None
) -> None:
    # Reference §9.7: "The body is Content-Type: application/x-www-form-urlencoded"; §10.1
    # step 7 lints exactly that. A form-shaped body sent under another type is not a form.
    headers = bridge.headers()
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = f"instrument={bridge.front}&qty=1&side=buy&type=market"
    answer = bridge.http.post(ORDERS, content=body.encode(), headers=headers)
    assert "form-encoded" in error_of(answer)
    assert bridge.d(ORDERS) == []


@pytest.mark.parametrize("where", ["query", "form"])
def test_place_request_id_is_recorded_as_client_order_id(bridge: Bridge, where: str) -> None:
    request_id = f"tb-{where}-1"
    if where == "query":
        answer = bridge.place(params={"requestId": request_id})
    else:
        answer = bridge.place(requestId=request_id)
    order_id = answer.json()["d"]["orderId"]
    engine = bridge.server.ctx.engine
    order = bridge.server.call(lambda: engine.order(int(order_id)))
    assert order is not None
    assert order.cl_ord_id == request_id
    assert "requestId" not in bridge.order(order_id)


def test_place_request_id_is_echoed_when_switched_on(bridge: Bridge) -> None:
    bridge.server.config.bridge_echo_request_id = True
    order_id = bridge.place_ok(requestId="tb-echo")
    assert bridge.order(order_id)["requestId"] == "tb-echo"


def test_place_with_stop_loss_and_take_profit_creates_inactive_bracket_legs(
    bridge: Bridge,
) -> None:
    last = bridge.quote_last(bridge.front)
    entry = last - 500
    parent_id = bridge.place_ok(
        type="limit", limitPrice=str(entry), stopLoss=str(entry - 20), takeProfit=str(entry + 40)
    )
    orders = {o["id"]: o for o in bridge.d(ORDERS)}
    parent = orders.pop(parent_id)
    assert parent["status"] == "working"
    assert (parent["stopLoss"], parent["takeProfit"]) == (entry - 20, entry + 40)
    legs = sorted(orders.values(), key=lambda o: o["type"])
    assert [(o["type"], o["side"], o["status"]) for o in legs] == [
        ("limit", "sell", "inactive"),
        ("stop", "sell", "inactive"),
    ]
    assert {o["parentId"] for o in legs} == {parent_id}
    assert {o["parentType"] for o in legs} == {"order"}
    assert legs[0]["limitPrice"] == entry + 40
    assert legs[1]["stopPrice"] == entry - 20


def test_place_bracket_legs_activate_when_entry_fills(bridge: Bridge) -> None:
    last = bridge.quote_last(bridge.front)
    parent_id = bridge.place_ok(stopLoss=str(last - 50), takeProfit=str(last + 50))
    statuses = {o["id"]: o["status"] for o in bridge.d(ORDERS)}
    assert statuses.pop(parent_id) == "filled"
    assert sorted(statuses.values()) == ["working", "working"]


def test_place_dropped_answer_still_places_the_order(bridge: Bridge) -> None:
    bridge.http.patch(
        "/_sim/faults", json={"drop_after_accept_rate": 1, "drop_mode": "http_500"}
    ).raise_for_status()
    answer = bridge.place(type="limit", limitPrice=below_market(bridge))
    assert answer.status_code == 500
    assert [o["status"] for o in bridge.d(ORDERS)] == ["working"]


def test_place_answered_401_after_accept_still_places_the_order(bridge: Bridge) -> None:
    bridge.http.patch(
        "/_sim/faults", json={"drop_after_accept_rate": 1, "drop_mode": "http_401"}
    ).raise_for_status()
    answer = bridge.place(type="limit", limitPrice=below_market(bridge))
    assert answer.status_code == 401
    assert answer.json() == {"s": "error", "errmsg": "Unauthorized"}
    assert [o["status"] for o in bridge.d(ORDERS)] == ["working"]


# --- modify, cancel, close -----------------------------------------------------------------


def test_modify_working_limit_changes_price_and_qty(bridge: Bridge) -> None:
    price = float(below_market(bridge))
    order_id = bridge.place_ok(type="limit", limitPrice=str(price))
    answer = bridge.http.put(
        f"{ORDERS}/{order_id}",
        data={"qty": "2", "limitPrice": str(price - 1)},
        headers=bridge.headers(),
    )
    assert answer.json() == {"s": "ok"}
    order = bridge.order(order_id)
    assert (order["qty"], order["limitPrice"]) == (2, price - 1)


def test_modify_without_qty_answers_missing_field_and_changes_nothing(bridge: Bridge) -> None:
    # Reference §9.5/§9.8: modify is form "qty, limitPrice?, stopPrice?, stopLoss?,
    # takeProfit?": qty is the one field without "?", as in TradingView's spec.
    price = float(below_market(bridge))
    order_id = bridge.place_ok(type="limit", limitPrice=str(price))
    answer = bridge.http.put(
        f"{ORDERS}/{order_id}", data={"limitPrice": str(price - 1)}, headers=bridge.headers()
    )
    assert error_of(answer) == "missing required field: qty"
    assert bridge.order(order_id)["limitPrice"] == price


def test_modify_bracket_prices_through_parent(bridge: Bridge) -> None:
    entry = float(below_market(bridge))
    parent_id = bridge.place_ok(
        type="limit", limitPrice=str(entry), stopLoss=str(entry - 20), takeProfit=str(entry + 40)
    )
    answer = bridge.http.put(
        f"{ORDERS}/{parent_id}",
        data={"qty": "1", "stopLoss": str(entry - 10), "takeProfit": str(entry + 30)},
        headers=bridge.headers(),
    )
    assert answer.json() == {"s": "ok"}
    parent = bridge.order(parent_id)
    assert (parent["stopLoss"], parent["takeProfit"]) == (entry - 10, entry + 30)


def test_modify_filled_order_answers_error(bridge: Bridge) -> None:
    order_id = bridge.place_ok()
    answer = bridge.http.put(f"{ORDERS}/{order_id}", data={"qty": "2"}, headers=bridge.headers())
    assert error_of(answer)


def test_cancel_working_order_then_again_answers_too_late(bridge: Bridge) -> None:
    order_id = bridge.place_ok(type="limit", limitPrice=below_market(bridge))
    first = bridge.http.delete(f"{ORDERS}/{order_id}", headers=bridge.headers())
    assert first.json() == {"s": "ok"}
    assert bridge.order(order_id)["status"] == "canceled"
    second = bridge.http.delete(f"{ORDERS}/{order_id}", headers=bridge.headers())
    assert error_of(second) == "Too late"


def test_cancel_after_fill_answers_too_late(bridge: Bridge) -> None:
    order_id = bridge.place_ok(type="limit", limitPrice=below_market(bridge, 1))
    bridge.set_price(bridge.front, below_market(bridge, 2))
    assert bridge.order(order_id)["status"] == "filled"
    answer = bridge.http.delete(f"{ORDERS}/{order_id}", headers=bridge.headers())
    assert error_of(answer) == "Too late"


def test_finished_order_lingers_in_orders_then_only_in_history(bridge: Bridge) -> None:
    bridge.server.config.finished_order_linger_s = 60
    order_id = bridge.place_ok(type="limit", limitPrice=below_market(bridge))
    bridge.http.delete(f"{ORDERS}/{order_id}", headers=bridge.headers()).raise_for_status()
    bridge.clock.advance(59)
    assert [o["id"] for o in bridge.d(ORDERS)] == [order_id]
    bridge.clock.advance(2)
    assert bridge.d(ORDERS) == []
    history = bridge.d(f"/accounts/{DEMO_ACCOUNT}/ordersHistory", maxCount=10)
    assert [(o["id"], o["status"]) for o in history] == [(order_id, "canceled")]


def test_orders_history_max_count_keeps_newest(bridge: Bridge) -> None:
    ids = [bridge.place_ok() for _ in range(3)]
    history = bridge.d(f"/accounts/{DEMO_ACCOUNT}/ordersHistory", maxCount=2)
    assert len(history) == 2
    assert set(ids) >= {o["id"] for o in history}


def test_position_after_fill_then_close_flattens(bridge: Bridge) -> None:
    bridge.place_ok(qty=2)
    positions = bridge.d(f"/accounts/{DEMO_ACCOUNT}/positions")
    assert [(p["instrument"], p["qty"], p["side"]) for p in positions] == [(bridge.front, 2, "buy")]
    assert "unrealizedPl" in positions[0]
    closed = bridge.http.delete(
        f"/accounts/{DEMO_ACCOUNT}/positions/{positions[0]['id']}", headers=bridge.headers()
    )
    assert closed.json() == {"s": "ok"}
    assert bridge.d(f"/accounts/{DEMO_ACCOUNT}/positions") == []


def test_executions_list_fills_filtered_by_instrument(bridge: Bridge) -> None:
    bridge.place_ok(qty=3)
    executions = bridge.d(f"/accounts/{DEMO_ACCOUNT}/executions", instrument=bridge.front)
    assert sum(e["qty"] for e in executions) == 3
    assert {e["side"] for e in executions} == {"buy"}
    assert all(e["time"] > 1_700_000_000_000 for e in executions)
    assert bridge.d(f"/accounts/{DEMO_ACCOUNT}/executions", instrument="ESZ6") == []


def test_state_reflects_open_position_pl(bridge: Bridge) -> None:
    bridge.place_ok()
    avg = bridge.d(f"/accounts/{DEMO_ACCOUNT}/positions")[0]["avgPrice"]
    bridge.set_price(bridge.front, str(avg + 10))
    state = bridge.d(f"/accounts/{DEMO_ACCOUNT}/state")
    assert state["unrealizedPl"] == pytest.approx(20.0, abs=1.0)  # 10 points x $2, +- spread
    assert state["equity"] == pytest.approx(state["balance"] + state["unrealizedPl"])


def test_place_gtd_needs_date_time_and_keeps_it(bridge: Bridge) -> None:
    bridge.server.config.durations = ["Day", "GTC", "GTD"]
    price = below_market(bridge)
    assert "durationDateTime" in error_of(
        bridge.place(type="limit", limitPrice=price, durationType="GTD")
    )
    expires = int(bridge.clock.now().timestamp()) + 3600
    order_id = bridge.place_ok(
        type="limit", limitPrice=price, durationType="GTD", durationDateTime=str(expires)
    )
    assert bridge.order(order_id)["duration"] == {"type": "GTD", "datetime": expires}
