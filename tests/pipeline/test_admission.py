"""Admission (issue 9, item 4): intake refuses exactly what a worker is sure to deny.

``admit`` runs the worker's own validate → route → risk with what is known before placement.
The oracle here is the worker's sequence (``dispatch/dispatcher.py``: needs → view → route →
risk) run against every broker picture that matters (short, flat, long; a quote where the
adapter reads one): a row admission refuses is placed in none of them (denied, at most
"nothing to do" in some), and a row it lets through is not denied in at least one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from tradebridge.brokers.base import BrokerCapabilities
from tradebridge.brokers.factory import dialect_capabilities
from tradebridge.domain.commands import LegTimeInForce, leg_time_in_force
from tradebridge.domain.enums import Dialect, OrderStatus, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.reports import OrderStatusReport, PositionReport
from tradebridge.pipeline.admission import Admission, admit
from tradebridge.pipeline.risk import (
    AccountState,
    OrderFacts,
    RiskLimits,
    Rules,
    check_order,
    reduces_only,
)
from tradebridge.pipeline.route import BrokerView, PlaceOrder, entry_reference, needs, route
from tradebridge.pipeline.validate import Denied, RawSignal, ValidSignal, validate

TODAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday, 09:00 in Chicago
BASE = RawSignal(
    signal_id="s1", account_name="A1", instrument="MNQZ6", side="buy", order_type="market",
    quantity=Decimal(1),
)  # fmt: skip
CID = ClientOrderId("tb-s1")
NATIVE = dialect_capabilities(Dialect.NATIVE)
BRIDGE = dialect_capabilities(Dialect.TVBRIDGE)
QUOTE = Decimal(21000)


def _known(risk: RiskLimits | Rules | None = None, legs: LegTimeInForce = "entry",
           now: datetime = NOW) -> Admission:  # fmt: skip
    limits = risk if isinstance(risk, RiskLimits) else RiskLimits()
    rules = risk if isinstance(risk, Rules) else Rules()
    return Admission(TODAY, {"A1"}, {}, limits, legs, rules=lambda _a, _s: rules, now=now)


def _worker(
    raw: RawSignal, can: BrokerCapabilities, known: Admission
) -> dict[int, Denied | PlaceOrder | None]:
    """Return what a worker does with ``raw`` per position held (None: placed, not an order)."""
    out: dict[int, Denied | PlaceOrder | None] = {}
    for position in (-3, -1, 0, 1, 3):
        checked = validate(raw, today=TODAY, accounts=known.accounts, root_map={})
        if isinstance(checked, Denied):
            out[position] = checked
            continue
        assert known.rules is not None
        assert known.now is not None
        rules = known.rules("A1", None)
        need = needs(checked, position_for_risk=rules.position)
        working = OrderStatusReport(BrokerOrderId("7"), AccountName("A1"), "MNQZ6", Side.BUY,
                                    OrderType.LIMIT, 1, OrderStatus.WORKING)  # fmt: skip
        view = BrokerView(
            positions=[PositionReport(AccountName("A1"), "MNQZ6", position, QUOTE)],
            working=[working],
            quote=QUOTE if need.quote and can.quotes else None,
            leg_time_in_force=can.leg_time_in_force,
        )
        plan = route(checked, view, CID, today=TODAY, legs=known.legs)
        if isinstance(plan, PlaceOrder):
            held = plan.position_before if need.position else None
            nets = {"MNQZ6": position} if need.position else None
            # As the dispatcher does: a stop's distance is measured from the entry's price.
            facts = OrderFacts(plan.command, known.now, position=held, positions=nets,
                               entry_price=entry_reference(checked, view.quote))  # fmt: skip
            _, risk = check_order(facts, AccountState(), rules, known.limits)
            out[position] = risk or plan
        else:
            out[position] = plan if isinstance(plan, Denied) else None
    return out


def _only_reduces(outcome: Denied | PlaceOrder | None) -> bool:
    # The place admission is stricter than the worker: it cannot know the position, so a
    # buy, sell, reverse or target it refuses may pass a worker where it only reduces one
    # (rules guard exposure). Get out with exit, flatten or target 0.
    return isinstance(outcome, PlaceOrder) and reduces_only(
        outcome.command, outcome.position_before
    )


def _refused_by_worker(outcome: Denied | PlaceOrder | None) -> bool:
    return isinstance(outcome, Denied) and not outcome.nothing_to_do


# (row changes, capabilities, limits or rules, leg policy, admission refuses)
CASES: list[tuple[str, dict[str, Any], BrokerCapabilities, RiskLimits | Rules, LegTimeInForce,
                  bool]] = [
    ("plain buy", {}, NATIVE, RiskLimits(), "entry", False),
    ("native ticks, no reference", {"stop_loss_ticks": 40}, NATIVE, RiskLimits(), "entry", True),
    ("bridge ticks, no reference", {"stop_loss_ticks": 40}, BRIDGE, RiskLimits(), "entry", False),
    ("bridge ticks and a price", {"stop_loss_ticks": 40, "take_profit": Decimal(21100)},
     BRIDGE, RiskLimits(), "entry", False),
    ("native ticks with reference", {"stop_loss_ticks": 40, "reference_price": Decimal(21000)},
     NATIVE, RiskLimits(), "entry", False),
    ("stop above a buy limit", {"order_type": "limit", "price": Decimal(21000),
                                "stop_loss": Decimal(21001)}, NATIVE, RiskLimits(), "entry", True),
    ("limit price off the grid", {"order_type": "limit", "price": Decimal("21000.1")},
     BRIDGE, RiskLimits(), "entry", True),
    ("unknown account", {"account_name": "B9"}, NATIVE, RiskLimits(), "entry", True),
    ("reverse with a side", {"intent": "reverse", "side": "sell"}, NATIVE, RiskLimits(),
     "entry", False),
    ("reverse with a bracket", {"intent": "reverse", "side": "sell", "stop_loss_ticks": 8,
                                "reference_price": Decimal(21000)}, BRIDGE, RiskLimits(),
     "entry", True),
    ("target with a bracket", {"intent": "target", "side": None,
                               "target_position": Decimal(2), "take_profit": Decimal(21100)},
     NATIVE, RiskLimits(), "entry", True),
    ("exit", {"intent": "exit", "side": None}, NATIVE, RiskLimits(), "entry", False),
    ("cancel", {"intent": "cancel", "side": None}, NATIVE, RiskLimits(), "entry", False),
    ("kill switch: buy", {}, NATIVE, RiskLimits(kill_switch=True), "entry", True),
    ("kill switch: reverse", {"intent": "reverse", "side": "sell"}, BRIDGE,
     RiskLimits(kill_switch=True), "entry", True),
    ("kill switch: exit", {"intent": "exit", "side": None}, NATIVE,
     RiskLimits(kill_switch=True), "entry", False),
    ("kill switch: target 0", {"intent": "target", "side": None, "target_position": Decimal(0)},
     NATIVE, RiskLimits(kill_switch=True), "entry", False),
    ("max qty: buy 3", {"quantity": Decimal(3)}, NATIVE, Rules(max_order_qty=2), "entry",
     True),
    ("max qty: target 5", {"intent": "target", "side": None, "target_position": Decimal(5)},
     NATIVE, Rules(max_order_qty=2), "entry", False),
    ("max position: buy 3", {"quantity": Decimal(3)}, NATIVE, Rules(max_position=2),
     "entry", False),
    ("root not allowed: buy", {}, NATIVE, Rules(allowed_roots=frozenset({"MES"})), "entry",
     True),
    ("root not allowed: exit", {"intent": "exit", "side": None}, NATIVE,
     Rules(allowed_roots=frozenset({"MES"})), "entry", False),
    ("root allowed: buy", {}, NATIVE, Rules(allowed_roots=frozenset({"MNQ", "MES"})), "entry",
     False),
    ("stop required: plain buy", {}, NATIVE, Rules(require_stop_loss=True), "entry", True),
    ("stop required: buy with ticks", {"stop_loss_ticks": 40, "reference_price": QUOTE}, NATIVE,
     Rules(require_stop_loss=True), "entry", False),
    ("stop required: bridge ticks priced later", {"stop_loss_ticks": 40}, BRIDGE,
     Rules(require_stop_loss=True), "entry", False),
    ("stop required: exit", {"intent": "exit", "side": None}, NATIVE,
     Rules(require_stop_loss=True), "entry", False),
    ("stop too close", {"stop_loss_ticks": 4}, NATIVE, Rules(min_stop_ticks=8), "entry", True),
    ("stop too far", {"stop_loss_ticks": 400}, NATIVE, Rules(max_stop_ticks=200), "entry", True),
    ("stop too far, bridge ticks", {"stop_loss_ticks": 400}, BRIDGE, Rules(max_stop_ticks=200),
     "entry", True),
    ("stop within bounds", {"stop_loss_ticks": 40, "reference_price": QUOTE}, NATIVE,
     Rules(min_stop_ticks=8, max_stop_ticks=200), "entry", False),
    ("hours: buy in session", {}, NATIVE, Rules(trading_hours=True, no_entry_before_close_min=10),
     "entry", False),
    ("bridge legs GTC on a Day entry", {"stop_loss": Decimal(20900)}, BRIDGE, RiskLimits(),
     "gtc", True),
    ("native legs GTC on a Day entry", {"stop_loss": Decimal(20900)}, NATIVE, RiskLimits(),
     "gtc", False),
    ("bridge legs of an IOC entry", {"stop_loss": Decimal(20900), "time_in_force": "ioc"},
     BRIDGE, RiskLimits(), "entry", True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "can", "risk", "legs", "refused"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_admission_refuses_exactly_what_the_worker_denies_in_every_picture(
    changes: dict[str, Any],
    can: BrokerCapabilities,
    risk: RiskLimits | Rules,
    legs: LegTimeInForce,
    refused: bool,
) -> None:
    raw = replace(BASE, **changes)
    known = _known(risk, legs)

    verdict = admit(raw, known, quotes=can.quotes, leg_time_in_force=can.leg_time_in_force)
    worker = _worker(raw, can, known)

    assert (verdict is not None) is refused, verdict
    if verdict is not None:  # never placed, whatever the broker reports, but to get out
        assert all(isinstance(o, Denied) or _only_reduces(o) for o in worker.values()), worker
        assert _refused_by_worker(worker[0]), worker
    else:  # no sure denial: placed, or nothing to do, for some position
        assert not all(_refused_by_worker(o) for o in worker.values()), worker


def test_admission_kill_switch_refuses_a_target_the_worker_lets_reduce() -> None:
    # Admission cannot know that target 1 would only reduce a long 3, so while the kill
    # switch is on it refuses it (get out with exit, flatten or target 0).
    raw = replace(BASE, intent="target", side=None, target_position=Decimal(1))
    known = _known(RiskLimits(kill_switch=True))

    verdict = admit(raw, known, quotes=False, leg_time_in_force=True)
    worker = _worker(raw, NATIVE, known)

    assert verdict is not None
    assert "kill switch" in verdict.reason
    assert isinstance(worker[3], PlaceOrder)


def test_admission_native_ticks_without_reference_names_the_reference() -> None:
    verdict = admit(replace(BASE, take_profit_ticks=12), _known(), quotes=False,
                    leg_time_in_force=True)  # fmt: skip

    assert verdict is not None
    assert verdict.field == "reference_price"
    assert "entry reference" in verdict.reason


@pytest.mark.parametrize(
    ("intent", "extra", "field"),
    [
        ("reverse", {"side": "sell", "stop_loss_ticks": 8}, "stop_loss_ticks"),
        ("target", {"target_position": Decimal(2), "take_profit": Decimal(21100)}, "take_profit"),
    ],
)
def test_validate_bracket_on_reverse_or_target_is_denied_not_dropped(
    intent: str, extra: dict[str, Any], field: str
) -> None:
    result = validate(replace(BASE, intent=intent, **extra), today=TODAY, accounts={"A1"})

    assert isinstance(result, Denied)
    assert result.field == field
    assert "do not go with" in result.reason


@pytest.mark.parametrize(
    ("entry", "policy", "legs"),
    [
        (TimeInForce.DAY, "entry", TimeInForce.DAY),
        (TimeInForce.GTC, "entry", TimeInForce.GTC),
        (TimeInForce.IOC, "entry", TimeInForce.DAY),
        (TimeInForce.FOK, "entry", TimeInForce.DAY),
        (TimeInForce.DAY, "gtc", TimeInForce.GTC),
        (TimeInForce.GTC, "day", TimeInForce.DAY),
    ],
)
def test_leg_time_in_force_follows_the_entry_unless_fixed(
    entry: TimeInForce, policy: LegTimeInForce, legs: TimeInForce
) -> None:
    assert leg_time_in_force(entry, policy) is legs


@pytest.mark.parametrize(("policy", "legs"), [("entry", TimeInForce.GTC), ("day", TimeInForce.DAY)])
def test_route_bracket_carries_the_leg_time_in_force(
    policy: LegTimeInForce, legs: TimeInForce
) -> None:
    checked = validate(replace(BASE, time_in_force="gtc", stop_loss=Decimal(20900)),
                       today=TODAY, accounts={"A1"})  # fmt: skip
    assert isinstance(checked, ValidSignal)

    plan = route(checked, BrokerView(), CID, today=TODAY, legs=policy)

    assert isinstance(plan, PlaceOrder)
    assert plan.command.bracket is not None
    assert plan.command.bracket.time_in_force is legs
    assert plan.command.leg_tif is legs
