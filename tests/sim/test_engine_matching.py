"""The matching engine: order types, sides, market moves, time in force, partial fills.

Prices start at ES 6000 (bid 6000.00, ask 6000.25) and only move when a test moves them.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from _engine_support import ES, d, make_sim

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.sim.engine import OrdStatus

BUY, SELL = Side.BUY, Side.SELL
MKT, LMT, STP, STPLMT = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT
FILLED, WORKING = OrdStatus.FILLED, OrdStatus.WORKING

# (type, side, limit, stop, move the market to, expected status, expected fill price)
MATRIX = [
    # marketable on arrival: market orders take the touch, limits improve to it
    (MKT, BUY, None, None, None, FILLED, "6000.25"),
    (MKT, SELL, None, None, None, FILLED, "6000"),
    (LMT, BUY, "6001", None, None, FILLED, "6000.25"),
    (LMT, SELL, "5999", None, None, FILLED, "6000"),
    # resting, then the market moves through: limits fill at their limit
    (LMT, BUY, "5990", None, "5985", FILLED, "5990"),
    (LMT, SELL, "6010", None, "6015", FILLED, "6010"),
    # resting, market moves the wrong way or not far enough: still working
    (LMT, BUY, "5990", None, "5995", WORKING, None),
    (LMT, SELL, "6010", None, "6005", WORKING, None),
    (LMT, BUY, "5990", None, "5990", WORKING, None),  # ask 5990.25 is still above the limit
    # stops trigger at the touch and then take it
    (STP, BUY, None, "6010", "6012", FILLED, "6012.25"),
    (STP, SELL, None, "5990", "5985", FILLED, "5985"),
    (STP, BUY, None, "6010", "6009.75", FILLED, "6010"),  # ask 6010.00 reaches the stop
    (STP, BUY, None, "6010", "6005", WORKING, None),
    (STP, SELL, None, "5990", "5995", WORKING, None),
    # stop-limits trigger, then trade as limits (at the touch when it is within the limit)
    (STPLMT, BUY, "6012", "6010", "6011", FILLED, "6011.25"),
    (STPLMT, SELL, "5988", "5990", "5989", FILLED, "5989"),
    (STPLMT, BUY, "6012", "6010", "6020", WORKING, None),  # triggered, past the limit
    (STPLMT, SELL, "5988", "5990", "5980", WORKING, None),
    (STPLMT, BUY, "6012", "6010", "6005", WORKING, None),  # never triggered
]


@pytest.mark.parametrize(("order_type", "side", "limit", "stop", "move", "status", "px"), MATRIX)
def test_matching_order_type_side_and_market_move_give_status_and_price(
    order_type: OrderType,
    side: Side,
    limit: str | None,
    stop: str | None,
    move: str | None,
    status: OrdStatus,
    px: str | None,
) -> None:
    sim = make_sim()
    result = sim.place(side, order_type, 2, price=limit, stop=stop)
    assert result.ok, result
    if move is not None:
        sim.price(ES, move)
    order = sim.order(result.order_id)
    assert order.ord_status is status
    fills = sim.engine.fills(order.id)
    if px is None:
        assert fills == []
        assert order.filled_qty == 0
        assert order.ts_final is None
    else:
        assert [(f.qty, f.price) for f in fills] == [(2, d(px))]
        assert order.filled_qty == 2
        assert order.avg_fill_price == d(px)
        assert order.ts_final is not None
        assert sim.net() == 2 * side.sign


def test_matching_resting_limit_gap_fills_at_limit_not_at_better_market() -> None:
    sim = make_sim()
    result = sim.place(BUY, LMT, price="5990")
    sim.price(ES, "5900")
    assert [f.price for f in sim.engine.fills(result.order_id)] == [d("5990")]


def test_matching_triggered_stop_limit_past_limit_fills_at_limit_when_market_returns() -> None:
    sim = make_sim()
    result = sim.place(BUY, STPLMT, price="6012", stop="6010")
    sim.price(ES, "6020")
    order = sim.order(result.order_id)
    assert order.triggered
    assert order.ord_status is WORKING
    sim.price(ES, "6005")  # below the stop again: stays triggered, the limit is now marketable
    assert order.ord_status is FILLED
    assert [f.price for f in sim.engine.fills(order.id)] == [d("6012")]


def test_matching_several_resting_orders_all_fill_when_crossed() -> None:
    sim = make_sim()
    ids = [sim.place(BUY, LMT, price=p).order_id for p in ("5995", "5990", "5980")]
    sim.price(ES, "5989")
    statuses = [sim.order(i).ord_status for i in ids]
    assert statuses == [FILLED, FILLED, WORKING]
    assert sim.net() == 2


@pytest.mark.parametrize(
    ("tif", "price", "liquidity", "qty", "filled", "status"),
    [
        (TimeInForce.IOC, "6001", None, 3, 3, FILLED),
        (TimeInForce.IOC, "6001", 2, 5, 2, OrdStatus.CANCELED),  # fills what it can
        (TimeInForce.IOC, "5990", None, 3, 0, OrdStatus.CANCELED),  # not marketable
        (TimeInForce.FOK, "6001", None, 3, 3, FILLED),
        (TimeInForce.FOK, "6001", 3, 3, 3, FILLED),
        (TimeInForce.FOK, "6001", 2, 5, 0, OrdStatus.CANCELED),  # all or nothing
        (TimeInForce.FOK, "5990", None, 3, 0, OrdStatus.CANCELED),
    ],
)
def test_matching_ioc_fok_first_pass_decides(
    tif: TimeInForce, price: str, liquidity: int | None, qty: int, filled: int, status: OrdStatus
) -> None:
    sim = make_sim(liquidity_per_fill=liquidity)
    result = sim.place(BUY, LMT, qty, price=price, tif=tif)
    sim.engine.advance()  # a later pass must not fill what the first pass left
    order = sim.order(result.order_id)
    assert (order.filled_qty, order.ord_status) == (filled, status)
    assert sim.net() == filled
    if status is OrdStatus.CANCELED:
        assert sim.engine.execution_reports(order.id)[-1].exec_type == "Canceled"


def test_matching_ioc_stop_waits_for_its_trigger_then_fills_or_cancels() -> None:
    sim = make_sim(liquidity_per_fill=1)
    result = sim.place(BUY, STP, 3, stop="6010", tif=TimeInForce.IOC)
    order = sim.order(result.order_id)
    assert order.ord_status is WORKING  # not triggered yet: IOC is judged at the trigger
    sim.price(ES, "6011")
    assert (order.filled_qty, order.ord_status) == (1, OrdStatus.CANCELED)


def test_matching_gtd_order_expires_at_expire_time() -> None:
    sim = make_sim()
    expire = sim.clock.now() + timedelta(seconds=60)
    result = sim.place(BUY, LMT, price="5990", tif=TimeInForce.GTD, expire_time=expire)
    order = sim.order(result.order_id)
    sim.clock.advance(59)
    sim.engine.advance()
    assert order.ord_status is WORKING
    sim.clock.advance(1)
    sim.engine.advance()
    assert order.ord_status is OrdStatus.EXPIRED
    assert order.ts_final == expire
    assert sim.engine.execution_reports(order.id)[-1].exec_type == "Expired"
    sim.price(ES, "5900")
    assert sim.engine.fills(order.id) == []


def test_matching_day_order_never_expires_in_the_simulator() -> None:
    sim = make_sim()
    result = sim.place(BUY, LMT, price="5990", tif=TimeInForce.DAY)
    sim.clock.advance(3 * 86400)
    sim.engine.advance()
    assert sim.order(result.order_id).ord_status is WORKING


def test_matching_liquidity_per_fill_splits_a_market_order_over_passes() -> None:
    sim = make_sim(liquidity_per_fill=2)
    result = sim.place(BUY, MKT, 5)
    order = sim.order(result.order_id)
    assert (order.filled_qty, order.ord_status) == (2, WORKING)
    sim.engine.advance()
    assert order.filled_qty == 4
    sim.engine.advance()
    assert (order.filled_qty, order.ord_status) == (5, FILLED)
    trades = [r for r in sim.engine.execution_reports(order.id) if r.exec_type == "Trade"]
    assert [(r.last_qty, r.cum_qty, r.ord_status) for r in trades] == [
        (2, 2, WORKING),
        (2, 4, WORKING),
        (1, 5, FILLED),
    ]
    assert all(r.last_px == d("6000.25") for r in trades)


def test_matching_liquidity_per_fill_resting_limit_fills_at_limit_over_passes() -> None:
    sim = make_sim(liquidity_per_fill=2)
    result = sim.place(SELL, LMT, 3, price="6010")
    sim.price(ES, "6020")
    order = sim.order(result.order_id)
    assert order.filled_qty == 2
    sim.engine.advance()
    assert order.ord_status is FILLED
    assert {f.price for f in sim.engine.fills(order.id)} == {d("6010")}


def test_matching_liquidity_leftover_stops_when_market_leaves_the_limit() -> None:
    sim = make_sim(liquidity_per_fill=1)
    result = sim.place(BUY, LMT, 3, price="6001")  # marketable: fills 1 at the ask
    sim.price(ES, "6005")  # ask 6005.25 is above the limit now
    order = sim.order(result.order_id)
    assert (order.filled_qty, order.ord_status) == (1, WORKING)
    sim.price(ES, "6000")  # back through the limit: the remainder trades again
    assert order.filled_qty == 2
    sim.engine.advance()
    assert order.ord_status is FILLED
    assert all(f.price <= d("6001") for f in sim.engine.fills(order.id))


def test_matching_avg_fill_price_weights_fills_by_quantity() -> None:
    sim = make_sim(liquidity_per_fill=1)
    result = sim.place(BUY, MKT, 2)
    sim.price(ES, "6001")
    order = sim.order(result.order_id)
    assert order.ord_status is FILLED
    assert order.avg_fill_price == (d("6000.25") + d("6001.25")) / 2
    assert sim.engine.execution_reports(order.id)[-1].avg_px == order.avg_fill_price


def test_matching_price_path_step_fills_a_resting_order_on_advance() -> None:
    sim = make_sim(price_step_s=1)
    quote = sim.engine.quote(sim.contract(ES).id)
    limit = quote.ask - d("0.25")
    result = sim.place(BUY, LMT, price=str(limit))
    order = sim.order(result.order_id)
    for _ in range(20_000):
        if order.ord_status is FILLED:
            break
        sim.clock.advance(1)
        sim.engine.advance()
    assert order.ord_status is FILLED
    assert [f.price for f in sim.engine.fills(order.id)] == [limit]
