"""Positions, realized and open P&L, and cash, on products whose point values differ."""

from __future__ import annotations

from decimal import Decimal

import pytest
from _engine_support import ACCOUNT, CL, ES, MNQ, OTHER_ACCOUNT, Sim, d, make_sim

from tradebridge.domain.enums import Side

BUY, SELL = Side.BUY, Side.SELL
INITIAL = Decimal(50_000)


def trade(sim: Sim, symbol: str, steps: list[tuple[str, Side, int]]) -> None:
    """Move the price, then trade at market, for each step."""
    for last, side, qty in steps:
        sim.price(symbol, last)
        assert sim.place(side, qty=qty, symbol=symbol).ok


# (symbol, [(last, side, qty)], net, net price, realized)
CASES = [
    # ES: $50 a point; buys pay the ask (last + 0.25), sells get the bid (last)
    (ES, [("6000", BUY, 2), ("6010", SELL, 2)], 0, None, (d("6010") - d("6000.25")) * 2 * 50),
    (ES, [("6000", SELL, 1), ("5990", BUY, 1)], 0, None, (d("6000") - d("5990.25")) * 50),
    (ES, [("6000", BUY, 2), ("5990", SELL, 1)], 1, d("6000.25"), (d("5990") - d("6000.25")) * 50),
    # flip from long 1 to short 2: the close realizes, the rest opens at the fill price
    (ES, [("6000", BUY, 1), ("6004", SELL, 3)], -2, d("6004"), (d("6004") - d("6000.25")) * 50),
    (ES, [("6000", BUY, 1), ("6004", SELL, 3), ("6002", BUY, 2)], 0, None,
     (d("6004") - d("6000.25")) * 50 + (d("6004") - d("6002.25")) * 2 * 50),
    # first in, first out: the first lot closes first
    (ES, [("6000", BUY, 1), ("6010", BUY, 1), ("6020", SELL, 1)], 1, d("6010.25"),
     (d("6020") - d("6000.25")) * 50),
    (ES, [("6000", BUY, 1), ("6001", BUY, 1)], 2, d("6000.75"), Decimal(0)),
    # CL: $1000 a point, tick 0.01
    (CL, [("70", BUY, 1), ("71", SELL, 1)], 0, None, (d("71") - d("70.01")) * 1000),
    (CL, [("70", SELL, 3), ("69.50", BUY, 3)], 0, None, (d("70") - d("69.51")) * 3 * 1000),
    (CL, [("70", BUY, 2), ("69", SELL, 3)], -1, d("69"), (d("69") - d("70.01")) * 2 * 1000),
    # MNQ: $2 a point
    (MNQ, [("21000", BUY, 5), ("21100", SELL, 5)], 0, None, (d("21100") - d("21000.25")) * 10),
]  # fmt: skip


@pytest.mark.parametrize(("symbol", "steps", "net", "net_price", "realized"), CASES)
def test_position_trades_give_net_average_price_and_realized_pnl(
    symbol: str,
    steps: list[tuple[str, Side, int]],
    net: int,
    net_price: Decimal | None,
    realized: Decimal,
) -> None:
    sim = make_sim()
    trade(sim, symbol, steps)
    (position,) = sim.engine.positions(ACCOUNT)
    assert position.contract_id == sim.contract(symbol).id
    assert (position.net_pos, position.net_price, position.realized_pnl) == (
        net,
        net_price,
        realized,
    )
    cash = sim.engine.cash_balance(ACCOUNT)
    assert (cash.amount, cash.realized_pnl) == (INITIAL + realized, realized)


def test_position_bought_and_sold_totals_add_up() -> None:
    sim = make_sim()
    trade(sim, ES, [("6000", BUY, 2), ("6010", SELL, 3)])
    (position,) = sim.engine.positions(ACCOUNT)
    assert (position.bought, position.bought_value) == (2, d("6000.25") * 2)
    assert (position.sold, position.sold_value) == (3, d("6010") * 3)


def test_position_is_per_account_and_contract() -> None:
    sim = make_sim()
    trade(sim, ES, [("6000", BUY, 1)])
    trade(sim, CL, [("70", SELL, 2)])
    assert sim.place(BUY, qty=4, account=OTHER_ACCOUNT).ok
    assert {(p.contract_id, p.net_pos) for p in sim.engine.positions(ACCOUNT)} == {
        (sim.contract(ES).id, 1),
        (sim.contract(CL).id, -2),
    }
    assert [p.net_pos for p in sim.engine.positions(OTHER_ACCOUNT)] == [4]
    assert len(sim.engine.positions()) == 3


def test_cash_balance_starts_at_the_configured_initial_cash() -> None:
    sim = make_sim()
    assert sim.engine.cash_balance(ACCOUNT).amount == INITIAL
    assert sim.engine.cash_balance(ACCOUNT).realized_pnl == 0


@pytest.mark.parametrize(
    ("symbol", "side", "qty", "move", "expected"),
    [
        # longs are marked at the bid, shorts at the ask
        (ES, BUY, 2, "6010", (d("6010") - d("6000.25")) * 2 * 50),
        (ES, SELL, 1, "5990", (d("6000") - d("5990.25")) * 50),
        (ES, BUY, 1, "6000", d("-0.25") * 50),  # the spread costs a tick at once
        (CL, BUY, 1, "70.50", (d("70.50") - d("70.01")) * 1000),
        (CL, SELL, 2, "71", (d("70") - d("71.01")) * 2 * 1000),
    ],
)
def test_open_pnl_marks_positions_at_the_closing_side(
    symbol: str, side: Side, qty: int, move: str, expected: Decimal
) -> None:
    sim = make_sim()
    assert sim.place(side, qty=qty, symbol=symbol).ok
    sim.price(symbol, move)
    assert sim.engine.open_pnl(ACCOUNT) == expected
    assert sim.engine.cash_balance(ACCOUNT).amount == INITIAL  # open P&L is not cash


def test_open_pnl_sums_contracts_and_ignores_flat_positions() -> None:
    sim = make_sim()
    trade(sim, ES, [("6000", BUY, 1), ("6000", SELL, 1)])
    assert sim.engine.open_pnl(ACCOUNT) == 0
    trade(sim, ES, [("6000", BUY, 1)])
    trade(sim, CL, [("70", BUY, 1)])
    sim.price(ES, "6001")
    sim.price(CL, "70.11")
    assert sim.engine.open_pnl(ACCOUNT) == d("0.75") * 50 + d("0.10") * 1000
