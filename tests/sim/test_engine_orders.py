"""Modify, cancel and liquidate; commands and execution reports along the way."""

from __future__ import annotations

from datetime import timedelta

import pytest
from _engine_support import ACCOUNT, ES, MNQ, OTHER_ACCOUNT, d, make_sim

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.sim.config import SimAccountConfig, SimUserConfig
from tradebridge.sim.engine import BracketRequest, OrdStatus

BUY, SELL = Side.BUY, Side.SELL
MKT, LMT, STP, STPLMT = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT


def test_place_order_accepted_order_has_version_command_and_new_report() -> None:
    sim = make_sim()
    result = sim.place(BUY, LMT, 2, price="5990", cl_ord_id="tb-7", is_automated=True, text="x")
    order = sim.order(result.order_id)
    assert order.id >= 1_000_001
    assert (order.ord_status, order.cl_ord_id, order.is_automated) == (
        OrdStatus.WORKING,
        "tb-7",
        True,
    )
    (version,) = sim.engine.order_versions(order.id)
    assert version is order.version
    assert (version.order_qty, version.price, version.stop_price, version.text) == (
        2,
        d("5990"),
        None,
        "x",
    )
    (command,) = sim.engine.commands(order.id)
    assert (command.command_type, command.command_status, command.cl_ord_id) == (
        "New",
        "RiskPassed",
        "tb-7",
    )
    (report,) = sim.engine.execution_reports(order.id)
    assert (report.exec_type, report.ord_status, report.command_id) == (
        "New",
        OrdStatus.WORKING,
        command.id,
    )


def test_place_order_ids_increase_and_never_repeat() -> None:
    sim = make_sim()
    ids = [sim.place(BUY, LMT, price="5990").order_id for _ in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_modify_order_new_price_creates_a_version_and_replaced_report() -> None:
    sim = make_sim()
    order_id = sim.place(BUY, LMT, 2, price="5990").order_id
    result = sim.engine.modify_order(order_id, 3, LMT, d("5991"), None, cl_ord_id="tb-m")
    assert result.ok
    assert result.command_id is not None
    order = sim.order(order_id)
    assert [(v.order_qty, v.price) for v in sim.engine.order_versions(order_id)] == [
        (2, d("5990")),
        (3, d("5991")),
    ]
    assert order.version.order_qty == 3
    assert sim.engine.execution_reports(order_id)[-1].exec_type == "Replaced"
    command = sim.engine.commands(order_id)[-1]
    assert (command.id, command.command_type, command.cl_ord_id) == (
        result.command_id,
        "Modify",
        "tb-m",
    )


def test_modify_order_into_the_market_fills_at_the_touch() -> None:
    sim = make_sim()
    order_id = sim.place(BUY, LMT, price="5990").order_id
    assert sim.engine.modify_order(order_id, 1, LMT, d("6005"), None).ok
    assert [f.price for f in sim.engine.fills(order_id)] == [d("6000.25")]


def test_modify_order_limit_to_market_fills() -> None:
    sim = make_sim()
    order_id = sim.place(SELL, LMT, price="6010").order_id
    assert sim.engine.modify_order(order_id, 1, MKT, None, None).ok
    assert sim.order(order_id).ord_status is OrdStatus.FILLED


def test_modify_order_moved_stop_keeps_working_at_the_new_trigger() -> None:
    sim = make_sim()
    order_id = sim.place(BUY, STP, stop="6010").order_id
    assert sim.engine.modify_order(order_id, 1, STP, None, d("6020")).ok
    sim.price(ES, "6015")
    assert sim.order(order_id).ord_status is OrdStatus.WORKING
    sim.price(ES, "6020")
    assert sim.order(order_id).ord_status is OrdStatus.FILLED


@pytest.mark.parametrize(
    ("config", "qty", "order_type", "price", "stop", "reason"),
    [
        ({}, 1, LMT, "5990.1", None, "InvalidPrice"),
        ({}, 1, LMT, None, None, "InvalidPrice"),
        ({}, 1, STP, None, "5990", "InvalidPrice"),  # a buy stop below the ask
        ({}, 0, LMT, "5990", None, "Unsupported"),
        ({"max_order_qty": 3}, 4, LMT, "5990", None, "MaxOrderQtyLimitReached"),
        ({"max_position": 2}, 3, LMT, "5990", None, "MaxPosLimitReached"),
        ({"session_closed": False, "require_automated": True}, 1, LMT, "5991", None,
         "UnknownReason"),
    ],
)  # fmt: skip
def test_modify_order_bad_change_is_refused_and_leaves_the_order(
    config: dict[str, object],
    qty: int,
    order_type: OrderType,
    price: str | None,
    stop: str | None,
    reason: str,
) -> None:
    sim = make_sim(**config)
    order_id = sim.place(BUY, LMT, price="5990", is_automated=True).order_id
    before = sim.order(order_id).version
    result = sim.engine.modify_order(
        order_id,
        qty,
        order_type,
        None if price is None else d(price),
        None if stop is None else d(stop),
    )
    assert result.failure_reason == reason
    assert result.command_id is not None
    assert sim.engine.commands(order_id)[-1].command_status == "RiskRejected"
    assert sim.order(order_id).version is before
    assert len(sim.engine.order_versions(order_id)) == 1


def test_modify_order_quantity_not_above_filled_is_refused() -> None:
    sim = make_sim(liquidity_per_fill=2)
    order_id = sim.place(BUY, MKT, 5).order_id
    result = sim.engine.modify_order(order_id, 2, MKT, None, None)
    assert result.failure_reason == "Unsupported"
    assert sim.engine.modify_order(order_id, 3, MKT, None, None).ok
    assert sim.order(order_id).ord_status is OrdStatus.FILLED
    assert sim.order(order_id).filled_qty == 3


@pytest.mark.parametrize("final", ["filled", "canceled", "rejected"])
def test_modify_and_cancel_final_order_fail_too_late(final: str) -> None:
    sim = make_sim(max_order_qty=5)
    if final == "filled":
        order_id = sim.place(BUY).order_id
    elif final == "canceled":
        order_id = sim.place(BUY, LMT, price="5990").order_id
        assert sim.engine.cancel_order(order_id).ok
    else:
        order_id = sim.place(BUY, qty=6).order_id
    assert order_id is not None
    modify = sim.engine.modify_order(order_id, 1, LMT, d("5990"), None)
    cancel = sim.engine.cancel_order(order_id)
    for result in (modify, cancel):
        assert (result.failure_reason, result.failure_text) == ("TooLate", "Too late")
        assert result.command_id is not None
    commands = sim.engine.commands(order_id)[-2:]
    assert [(c.command_type, c.command_status) for c in commands] == [
        ("Modify", "ExecutionRejected"),
        ("Cancel", "ExecutionRejected"),
    ]


def test_cancel_order_working_order_is_canceled_with_report_and_command() -> None:
    sim = make_sim()
    order_id = sim.place(BUY, LMT, price="5990").order_id
    result = sim.engine.cancel_order(order_id, cl_ord_id="tb-c", is_automated=True)
    assert result.ok
    order = sim.order(order_id)
    assert order.ord_status is OrdStatus.CANCELED
    assert order.ts_final is not None
    assert sim.engine.execution_reports(order_id)[-1].exec_type == "Canceled"
    command = sim.engine.commands(order_id)[-1]
    assert (command.id, command.command_type, command.command_status, command.is_automated) == (
        result.command_id,
        "Cancel",
        "RiskPassed",
        True,
    )
    sim.price(ES, "5900")
    assert sim.engine.fills(order_id) == []


def test_cancel_order_partly_filled_keeps_its_fills() -> None:
    sim = make_sim(liquidity_per_fill=1)
    order_id = sim.place(BUY, MKT, 3).order_id
    assert sim.engine.cancel_order(order_id).ok
    sim.engine.advance()
    order = sim.order(order_id)
    assert (order.ord_status, order.filled_qty) == (OrdStatus.CANCELED, 1)
    assert sim.net() == 1


@pytest.mark.parametrize("call", ["modify", "cancel"])
def test_modify_and_cancel_unknown_order_is_access_denied(call: str) -> None:
    sim = make_sim()
    if call == "modify":
        result = sim.engine.modify_order(999, 1, MKT, None, None)
    else:
        result = sim.engine.cancel_order(999)
    assert (result.failure_reason, result.failure_text, result.command_id) == (
        "UnknownReason",
        "Access is denied",
        None,
    )


def test_cancel_order_on_readonly_account_is_unauthorized() -> None:
    users = [
        SimUserConfig(
            id=1,
            name="demo",
            password="demo",
            accounts=[SimAccountConfig(id=ACCOUNT, name="A", bridge_id="DA")],
        )
    ]
    sim = make_sim(users=users)
    order_id = sim.place(BUY, LMT, price="5990").order_id
    sim.engine.account(ACCOUNT).readonly = True  # type: ignore[union-attr]
    result = sim.engine.cancel_order(order_id)
    assert result.failure_reason == "Unauthorized"
    assert sim.order(order_id).ord_status is OrdStatus.WORKING


def test_liquidate_position_cancels_orders_and_closes_a_long() -> None:
    sim = make_sim()
    assert sim.place(BUY, qty=3).ok
    resting = [
        sim.place(SELL, LMT, price="6010").order_id,
        sim.place(BUY, LMT, price="5990").order_id,
    ]
    elsewhere = sim.place(BUY, LMT, symbol=MNQ, price="20990").order_id
    other_account = sim.place(BUY, LMT, account=OTHER_ACCOUNT, price="5990").order_id
    result = sim.engine.liquidate_position(ACCOUNT, sim.contract(ES).id, is_automated=True)
    assert result.ok
    closing = sim.order(result.order_id)
    assert (closing.action, closing.version.order_qty, closing.version.order_type) == (SELL, 3, MKT)
    assert closing.is_automated
    assert closing.ord_status is OrdStatus.FILLED
    assert [sim.order(i).ord_status for i in resting] == [OrdStatus.CANCELED] * 2
    assert sim.order(elsewhere).ord_status is OrdStatus.WORKING
    assert sim.order(other_account).ord_status is OrdStatus.WORKING
    assert sim.net() == 0


def test_liquidate_position_closes_a_short_with_a_buy() -> None:
    sim = make_sim()
    assert sim.place(SELL, qty=2).ok
    result = sim.engine.liquidate_position(ACCOUNT, sim.contract(ES).id)
    assert sim.order(result.order_id).action is BUY
    assert sim.net() == 0


def test_liquidate_position_when_flat_succeeds_without_an_order() -> None:
    sim = make_sim()
    order_id = sim.place(BUY, LMT, price="5990").order_id
    result = sim.engine.liquidate_position(ACCOUNT, sim.contract(ES).id)
    assert (result.ok, result.order_id) == (True, None)
    assert sim.order(order_id).ord_status is OrdStatus.CANCELED


def test_liquidate_position_cancels_bracket_entry_and_its_legs() -> None:
    sim = make_sim()
    result = sim.engine.place_oso(
        sim.request(BUY, LMT, price="5995"),
        BracketRequest(SELL, LMT, price=d("6010")),
        BracketRequest(SELL, STP, stop_price=d("5990")),
    )
    sim.engine.liquidate_position(ACCOUNT, sim.contract(ES).id)
    ids = (result.order_id, result.oso1_id, result.oso2_id)
    assert [sim.order(i).ord_status for i in ids] == [OrdStatus.CANCELED] * 3


@pytest.mark.parametrize(
    ("account", "contract_id", "reason"),
    [(424242, None, "UnknownReason"), (ACCOUNT, 17, "InvalidContract")],
)
def test_liquidate_position_unknown_account_or_contract_fails(
    account: int, contract_id: int | None, reason: str
) -> None:
    sim = make_sim()
    result = sim.engine.liquidate_position(account, contract_id or sim.contract(ES).id)
    assert result.failure_reason == reason


def test_gtd_modified_to_gtc_does_not_expire() -> None:
    sim = make_sim()
    expire = sim.clock.now() + timedelta(seconds=10)
    order_id = sim.place(BUY, LMT, price="5990", tif=TimeInForce.GTD, expire_time=expire).order_id
    assert sim.engine.modify_order(order_id, 1, LMT, d("5990"), None, TimeInForce.GTC).ok
    sim.clock.advance(20)
    sim.engine.advance()
    assert sim.order(order_id).ord_status is OrdStatus.WORKING


def test_stop_limit_modified_without_changing_trigger_stays_triggered() -> None:
    sim = make_sim()
    order_id = sim.place(BUY, STPLMT, price="6012", stop="6010").order_id
    sim.price(ES, "6020")  # triggered, above the limit
    assert sim.engine.modify_order(order_id, 1, STPLMT, d("6021"), d("6010")).ok
    assert sim.order(order_id).ord_status is OrdStatus.FILLED
    assert [f.price for f in sim.engine.fills(order_id)] == [d("6020.25")]
