"""OSO brackets (entry plus take-profit and stop-loss) and OCO pairs."""

from __future__ import annotations

import pytest
from _engine_support import ES, Sim, d, make_sim

from tradebridge.domain.enums import OrderType, Side
from tradebridge.sim.engine import BracketRequest, OrdStatus, PlaceResult

BUY, SELL = Side.BUY, Side.SELL
MKT, LMT, STP = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP
WORKING, SUSPENDED = OrdStatus.WORKING, OrdStatus.SUSPENDED
FILLED, CANCELED = OrdStatus.FILLED, OrdStatus.CANCELED


def tp(side: Side, price: str) -> BracketRequest:
    return BracketRequest(side, LMT, price=d(price), cl_ord_id=f"tp-{price}")


def sl(side: Side, stop: str) -> BracketRequest:
    return BracketRequest(side, STP, stop_price=d(stop), cl_ord_id=f"sl-{stop}")


def bracket(
    sim: Sim, entry_type: OrderType = MKT, qty: int = 1, price: str | None = None
) -> PlaceResult:
    entry = sim.request(BUY, entry_type, qty, price=price, cl_ord_id="entry")
    result = sim.engine.place_oso(entry, tp(SELL, "6010"), sl(SELL, "5990"))
    assert result.ok, result
    return result


def statuses(sim: Sim, result: PlaceResult) -> tuple[OrdStatus, ...]:
    ids = (result.order_id, result.oso1_id, result.oso2_id)
    return tuple(sim.order(i).ord_status for i in ids)


def test_oso_legs_are_linked_to_the_entry_and_to_each_other() -> None:
    sim = make_sim()
    result = bracket(sim, LMT, price="5995")
    entry, one, two = (sim.order(i) for i in (result.order_id, result.oso1_id, result.oso2_id))
    assert (entry.ord_status, one.ord_status, two.ord_status) == (WORKING, SUSPENDED, SUSPENDED)
    assert one.parent_id == two.parent_id == entry.id
    assert one.oco_id is not None
    assert one.oco_id == two.oco_id
    assert (one.linked_id, two.linked_id) == (two.id, one.id)
    assert (one.action, two.action) == (SELL, SELL)
    assert {c.cl_ord_id for c in sim.engine.commands()} == {"entry", "tp-6010", "sl-5990"}


def test_oso_market_entry_fills_and_activates_both_legs() -> None:
    sim = make_sim()
    result = bracket(sim, qty=2)
    assert statuses(sim, result) == (FILLED, WORKING, WORKING)
    assert {sim.order(result.oso1_id).version.order_qty, sim.order(result.oso2_id).leaves_qty} == {
        2
    }
    assert sim.net() == 2


@pytest.mark.parametrize(
    ("move", "expected", "net"),
    [
        ("6015", (FILLED, FILLED, CANCELED), 0),  # take-profit hit cancels the stop
        ("5985", (FILLED, CANCELED, FILLED), 0),  # stop hit cancels the take-profit
        ("6005", (FILLED, WORKING, WORKING), 1),  # neither
    ],
)
def test_oso_one_leg_filling_cancels_the_other(
    move: str, expected: tuple[OrdStatus, ...], net: int
) -> None:
    sim = make_sim()
    result = bracket(sim)
    sim.price(ES, move)
    assert statuses(sim, result) == expected
    assert sim.net() == net


def test_oso_take_profit_fills_at_its_limit_and_books_the_profit() -> None:
    sim = make_sim()
    result = bracket(sim)
    sim.price(ES, "6050")
    assert [f.price for f in sim.engine.fills(result.oso1_id)] == [d("6010")]
    assert sim.engine.cash_balance(100001).realized_pnl == (d("6010") - d("6000.25")) * 50


def test_oso_legs_wait_for_a_resting_entry() -> None:
    sim = make_sim()
    result = bracket(sim, LMT, price="5995")
    sim.price(ES, "6015")  # above the take-profit, but the legs are suspended
    assert statuses(sim, result) == (WORKING, SUSPENDED, SUSPENDED)
    sim.price(ES, "5994")  # entry fills at its limit; the stop is not reached
    assert statuses(sim, result) == (FILLED, WORKING, WORKING)


def test_oso_cancelled_unfilled_entry_cancels_the_legs() -> None:
    sim = make_sim()
    result = bracket(sim, LMT, price="5995")
    assert sim.engine.cancel_order(result.order_id).ok
    assert statuses(sim, result) == (CANCELED, CANCELED, CANCELED)
    assert sim.net() == 0


def test_oso_cancelled_partly_filled_entry_activates_legs_for_the_filled_qty() -> None:
    sim = make_sim(liquidity_per_fill=2)
    result = bracket(sim, MKT, qty=5)
    assert sim.order(result.order_id).filled_qty == 2
    assert sim.engine.cancel_order(result.order_id).ok
    assert statuses(sim, result) == (CANCELED, WORKING, WORKING)
    assert sim.order(result.oso1_id).version.order_qty == 2
    assert sim.order(result.oso2_id).version.order_qty == 2


def test_oso_single_bracket_has_no_oco_link() -> None:
    sim = make_sim()
    result = sim.engine.place_oso(sim.request(BUY), tp(SELL, "6010"), None)
    assert (result.oso2_id, result.oco_id) == (None, None)
    leg = sim.order(result.oso1_id)
    assert (leg.ord_status, leg.oco_id, leg.linked_id) == (WORKING, None, None)


@pytest.mark.parametrize(("one", "two"), [(BUY, SELL), (SELL, BUY), (BUY, BUY)])
def test_oso_bracket_on_the_entry_side_is_unsupported_and_creates_nothing(
    one: Side, two: Side
) -> None:
    sim = make_sim()
    result = sim.engine.place_oso(sim.request(BUY), tp(one, "6010"), sl(two, "5990"))
    assert (result.failure_reason, result.order_id) == ("Unsupported", None)
    assert sim.engine.orders() == []


def test_oso_bracket_with_bad_price_is_invalid_price() -> None:
    sim = make_sim()
    result = sim.engine.place_oso(sim.request(BUY), tp(SELL, "6010.1"), None)
    assert result.failure_reason == "InvalidPrice"
    assert sim.engine.orders() == []


def test_oso_risk_rejected_entry_creates_no_legs() -> None:
    sim = make_sim(session_closed=True)
    result = sim.engine.place_oso(sim.request(BUY), tp(SELL, "6010"), sl(SELL, "5990"))
    assert result.failure_reason == "SessionClosed"
    assert (result.oso1_id, result.oso2_id) == (None, None)
    assert [o.ord_status for o in sim.engine.orders()] == [OrdStatus.REJECTED]


def test_oso_modified_entry_quantity_carries_over_to_suspended_legs() -> None:
    sim = make_sim()
    result = bracket(sim, LMT, qty=1, price="5995")
    assert sim.engine.modify_order(result.order_id, 3, LMT, d("5995"), None).ok
    assert sim.order(result.oso1_id).version.order_qty == 3
    assert len(sim.engine.order_versions(result.oso2_id)) == 2


def test_oso_short_entry_takes_buy_brackets() -> None:
    sim = make_sim()
    result = sim.engine.place_oso(sim.request(SELL), tp(BUY, "5990"), sl(BUY, "6010"))
    sim.price(ES, "5980")
    assert statuses(sim, result) == (FILLED, FILLED, CANCELED)
    assert sim.net() == 0


# --- OCO -----------------------------------------------------------------------------------


def oco(sim: Sim, qty: int = 1) -> PlaceResult:
    assert sim.place(BUY, qty=qty).ok
    first = sim.request(SELL, LMT, qty, price="6010", cl_ord_id="oco-tp")
    result = sim.engine.place_oco(first, sl(SELL, "5990"))
    assert result.ok, result
    return result


def test_oco_pair_shares_an_oco_id_and_reports_the_other_order() -> None:
    sim = make_sim()
    result = oco(sim)
    first, other = sim.order(result.order_id), sim.order(result.oco_id)
    assert first.oco_id == other.oco_id
    assert first.oco_id is not None
    assert (first.linked_id, other.linked_id) == (other.id, first.id)
    assert (first.ord_status, other.ord_status) == (WORKING, WORKING)
    assert other.version.order_qty == 1


@pytest.mark.parametrize(
    ("move", "first", "other"),
    [("6020", FILLED, CANCELED), ("5980", CANCELED, FILLED)],
)
def test_oco_fill_of_one_cancels_the_other(move: str, first: OrdStatus, other: OrdStatus) -> None:
    sim = make_sim()
    result = oco(sim)
    sim.price(ES, move)
    assert (sim.order(result.order_id).ord_status, sim.order(result.oco_id).ord_status) == (
        first,
        other,
    )
    assert sim.net() == 0


def test_oco_cancel_of_one_cancels_the_other() -> None:
    sim = make_sim()
    result = oco(sim)
    assert sim.engine.cancel_order(result.oco_id).ok
    assert sim.order(result.order_id).ord_status is CANCELED


def test_oco_partial_fill_shrinks_the_other_to_what_is_left() -> None:
    sim = make_sim(liquidity_per_fill=2)
    result = oco(sim, qty=5)
    sim.engine.advance()
    sim.engine.advance()  # the entry of 5 is filled now
    assert sim.net() == 5
    sim.price(ES, "6020")
    first, other = sim.order(result.order_id), sim.order(result.oco_id)
    assert (first.filled_qty, other.version.order_qty) == (2, 3)
    sim.engine.advance()
    assert other.version.order_qty == 1
    sim.engine.advance()
    assert (first.ord_status, other.ord_status) == (FILLED, CANCELED)
    assert sim.net() == 0


def test_oco_marketable_first_order_fills_at_once_and_cancels_the_other() -> None:
    sim = make_sim()
    first = sim.request(BUY, LMT, price="6001")
    other = BracketRequest(BUY, STP, stop_price=d("6020"))
    result = sim.engine.place_oco(first, other)
    assert (sim.order(result.order_id).ord_status, sim.order(result.oco_id).ord_status) == (
        FILLED,
        CANCELED,
    )


def test_oco_other_stop_already_passed_is_invalid_price() -> None:
    sim = make_sim()
    result = sim.engine.place_oco(sim.request(SELL, LMT, price="6010"), sl(SELL, "6005"))
    assert result.failure_reason == "InvalidPrice"
    assert sim.engine.orders() == []
