"""Order validation: every refusal, its failureReason, and what it leaves behind."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from _engine_support import ACCOUNT, ES, MNQ, Sim, make_sim

from tradebridge.domain.enums import OrderType, Side, TimeInForce
from tradebridge.sim.config import SimAccountConfig, SimUserConfig
from tradebridge.sim.engine import OrdStatus

BUY, SELL = Side.BUY, Side.SELL
MKT, LMT, STP, STPLMT = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT

READONLY_USERS = [
    SimUserConfig(
        id=1,
        name="demo",
        password="demo",
        accounts=[
            SimAccountConfig(id=ACCOUNT, name="DEMO0000001", bridge_id="D100001"),
            SimAccountConfig(id=9, name="READONLY", bridge_id="D9", readonly=True),
        ],
    )
]

INVALID_CONTRACT: dict[str, Any] = {"unknown_contract_failure": "InvalidContract"}

# (config, order arguments, failureReason, a piece of failureText)
NO_ORDER_CASES: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
    ({}, {"account": 424242}, "UnknownReason", "Access is denied"),
    ({"users": READONLY_USERS}, {"account": 9}, "Unauthorized", "read-only"),
    # Unknown contracts: the reference's answer by default (§5.1, TI#45), or the switch's.
    ({}, {"symbol": "XYZZ6"}, "UnknownReason", "Access is denied"),
    ({}, {"symbol": "MNQF7"}, "UnknownReason", "Access is denied"),  # MNQ lists only H M U Z
    (INVALID_CONTRACT, {"symbol": "XYZZ6"}, "InvalidContract", "XYZZ6"),
    (INVALID_CONTRACT, {"symbol": "not a symbol"}, "InvalidContract", "not a symbol"),
    (INVALID_CONTRACT, {"symbol": "MNQF7"}, "InvalidContract", "MNQF7"),
    ({}, {"symbol": "MNQZ5"}, "InvalidContract", "expired on 2025-12-19"),
    ({}, {"qty": 0}, "Unsupported", "orderQty"),
    ({}, {"qty": -1}, "Unsupported", "orderQty"),
    ({}, {"order_type": LMT}, "InvalidPrice", "price is required"),
    ({}, {"order_type": LMT, "price": "6000.1"}, "InvalidPrice", "tick size 0.25"),
    ({}, {"order_type": LMT, "price": "0"}, "InvalidPrice", "positive"),
    ({}, {"order_type": LMT, "price": "-5"}, "InvalidPrice", "positive"),
    ({}, {"order_type": STP}, "InvalidPrice", "stopPrice is required"),
    ({}, {"order_type": STPLMT, "stop": "6010"}, "InvalidPrice", "price is required"),
    ({}, {"order_type": STPLMT, "price": "6010"}, "InvalidPrice", "stopPrice is required"),
    ({}, {"order_type": STP, "stop": "6010.10"}, "InvalidPrice", "tick size"),
    ({}, {"order_type": STP, "stop": "6000.25"}, "InvalidPrice", "above the ask 6000.25"),
    ({}, {"order_type": STP, "stop": "5990"}, "InvalidPrice", "above the ask"),
    ({}, {"order_type": STP, "action": SELL, "stop": "6000"}, "InvalidPrice", "below the bid"),
    ({}, {"order_type": STPLMT, "action": SELL, "stop": "6005", "price": "6004"},
     "InvalidPrice", "below the bid"),
    ({}, {"order_type": LMT, "price": "5990", "tif": TimeInForce.GTD}, "Unsupported",
     "expireTime"),
    ({"require_automated": True}, {}, "UnknownReason", "isAutomated is required"),
]  # fmt: skip


def _place(sim: Sim, action: Side = BUY, **fields: Any) -> Any:
    order_type = fields.pop("order_type", MKT)
    qty = fields.pop("qty", 1)
    return sim.place(fields.pop("action", action), order_type, qty, **fields)


@pytest.mark.parametrize(("config", "args", "reason", "text"), NO_ORDER_CASES)
def test_place_order_invalid_request_fails_without_creating_anything(
    config: dict[str, Any], args: dict[str, Any], reason: str, text: str
) -> None:
    sim = make_sim(**config)
    result = _place(sim, **args)
    assert not result.ok
    assert result.order_id is None
    assert result.failure_reason == reason
    assert result.failure_text is not None
    assert text in result.failure_text
    assert sim.engine.orders() == []
    assert sim.engine.commands() == []
    assert sim.events == []


def test_place_order_gtd_expire_time_in_the_past_is_unsupported() -> None:
    sim = make_sim()
    past = sim.clock.now() - timedelta(seconds=1)
    result = sim.place(BUY, LMT, price="5990", tif=TimeInForce.GTD, expire_time=past)
    assert (result.failure_reason, result.order_id) == ("Unsupported", None)


def test_place_order_automated_order_passes_when_automation_is_required() -> None:
    sim = make_sim(require_automated=True)
    assert sim.place(BUY, is_automated=True).ok


# (config, setup orders before, the order, failureReason)
RISK_CASES: list[tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], str]] = [
    ({"max_order_qty": 5}, [], {"qty": 6}, "MaxOrderQtyLimitReached"),
    ({"max_position": 3}, [{"qty": 2}], {"qty": 2}, "MaxPosLimitReached"),
    ({"max_position": 3}, [{"order_type": LMT, "price": "5990", "qty": 3}], {"qty": 1},
     "MaxPosLimitReached"),  # working orders on the same side count
    ({"max_position": 3}, [{"qty": 3}], {"action": SELL, "qty": 7}, "MaxPosLimitReached"),
    ({"session_closed": True}, [], {}, "SessionClosed"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "before", "args", "reason"), RISK_CASES)
def test_place_order_risk_failure_creates_a_rejected_order(
    config: dict[str, Any], before: list[dict[str, Any]], args: dict[str, Any], reason: str
) -> None:
    sim = make_sim(**config)
    for fields in before:
        assert _place(sim, **fields).ok
    result = _place(sim, cl_ord_id="tb-risk", **args)
    assert result.failure_reason == reason
    assert result.failure_text
    order = sim.order(result.order_id)
    assert order.ord_status is OrdStatus.REJECTED
    assert order.reject_reason == reason
    assert order.ts_final is not None
    (report,) = sim.engine.execution_reports(order.id)
    assert (report.exec_type, report.reject_reason) == ("Rejected", reason)
    (command,) = sim.engine.commands(order.id)
    assert (command.command_status, command.cl_ord_id) == ("RiskRejected", "tb-risk")
    assert sim.engine.fills(order.id) == []


@pytest.mark.parametrize(
    ("config", "args"),
    [
        ({"max_position": 3}, {"qty": 3}),
        ({"max_position": 3}, {"action": SELL, "qty": 3}),
        ({"max_order_qty": 5}, {"qty": 5}),
    ],
)
def test_place_order_at_the_risk_limit_is_accepted(
    config: dict[str, Any], args: dict[str, Any]
) -> None:
    sim = make_sim(**config)
    assert _place(sim, **args).ok


def test_place_order_reducing_order_passes_the_position_limit() -> None:
    sim = make_sim(max_position=3)
    assert sim.place(BUY, qty=3).ok
    assert sim.place(SELL, qty=2).ok
    assert sim.net() == 1


@pytest.mark.parametrize(("policy", "second_ok"), [("accept", True), ("reject", False)])
def test_place_order_duplicate_cl_ord_id_follows_the_policy(policy: str, second_ok: bool) -> None:
    sim = make_sim(duplicate_cl_ord_id=policy)
    assert sim.place(BUY, cl_ord_id="tb-1").ok
    second = sim.place(BUY, cl_ord_id="tb-1")
    assert second.ok is second_ok
    if not second_ok:
        assert (second.failure_reason, second.failure_text) == (
            "UnknownReason",
            "Duplicate clOrdId 'tb-1'",
        )
        assert len(sim.engine.orders()) == 1
    assert sim.place(BUY, cl_ord_id="tb-2").ok


def test_place_order_duplicate_cl_ord_id_is_per_account() -> None:
    sim = make_sim(duplicate_cl_ord_id="reject")
    assert sim.place(BUY, cl_ord_id="tb-1").ok
    assert sim.place(BUY, cl_ord_id="tb-1", account=100002).ok


def test_place_order_injected_failure_fails_the_next_orders_then_stops() -> None:
    sim = make_sim()
    faults = sim.engine.config.faults
    faults.inject_failure_reason = "RiskCheckTimeout"
    faults.inject_failure_text = "Risk check timed out"
    faults.inject_failure_count = 2
    results = [sim.place(BUY, symbol=MNQ) for _ in range(3)]
    assert [(r.failure_reason, r.failure_text) for r in results[:2]] == [
        ("RiskCheckTimeout", "Risk check timed out")
    ] * 2
    assert results[2].ok
    assert faults.inject_failure_count == 0
    assert len(sim.engine.orders()) == 1


def test_place_order_expired_contract_is_found_but_not_traded() -> None:
    sim = make_sim()
    contract = sim.engine.find_contract("MNQZ5")
    assert contract is not None
    assert sim.engine.is_expired(contract)
    result = sim.place(BUY, symbol="MNQZ5")
    assert result.failure_reason == "InvalidContract"


def test_place_order_valid_contract_spellings_resolve_to_one_contract() -> None:
    sim = make_sim()
    ids = {sim.order(sim.place(BUY, symbol=s).order_id).contract_id for s in (ES, "ESZ2026")}
    assert ids == {sim.contract(ES).id}
