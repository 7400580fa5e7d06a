"""Change events: one per create or update, in order, to every subscriber."""

from __future__ import annotations

import pytest
from _engine_support import APEX_ACCOUNT, ES, d, make_sim

from tradebridge.domain.enums import OrderType, Side
from tradebridge.sim.engine import (
    BracketRequest,
    EntityChange,
    OrdStatus,
    SimCashBalance,
    SimCommand,
    SimExecutionReport,
    SimFill,
    SimOrder,
    SimOrderVersion,
    SimPosition,
)

BUY, SELL = Side.BUY, Side.SELL
ENTITY_CLASSES = {
    "order": SimOrder,
    "orderVersion": SimOrderVersion,
    "executionReport": SimExecutionReport,
    "fill": SimFill,
    "position": SimPosition,
    "cashBalance": SimCashBalance,
    "command": SimCommand,
}


def kinds(events: list[EntityChange]) -> list[tuple[str, str]]:
    return [(e.entity_type, e.event_type) for e in events]


def test_events_market_order_publishes_each_change_in_order() -> None:
    sim = make_sim()
    sim.place(BUY)
    assert kinds(sim.events) == [
        ("order", "created"),
        ("orderVersion", "created"),
        ("command", "created"),
        ("executionReport", "created"),  # New
        ("fill", "created"),
        ("executionReport", "created"),  # Trade
        ("order", "updated"),
        ("position", "created"),
    ]
    for event in sim.events:
        assert isinstance(event.entity, ENTITY_CLASSES[event.entity_type])
        assert event.user_id == 1


def test_events_closing_trade_updates_position_and_cash() -> None:
    sim = make_sim()
    sim.place(BUY)
    sim.events.clear()
    sim.price(ES, "6010")
    sim.place(SELL)
    assert kinds(sim.events)[-3:] == [
        ("order", "updated"),
        ("position", "updated"),
        ("cashBalance", "updated"),
    ]
    cash = sim.events[-1].entity
    assert isinstance(cash, SimCashBalance)
    assert cash.realized_pnl > 0


def test_events_carry_the_entity_as_it_was_at_that_change() -> None:
    sim = make_sim()
    sim.place(BUY)
    orders = [e.entity for e in sim.events if isinstance(e.entity, SimOrder)]
    assert [o.ord_status for o in orders] == [OrdStatus.WORKING, OrdStatus.FILLED]
    reports = [e.entity for e in sim.events if isinstance(e.entity, SimExecutionReport)]
    assert [r.exec_type for r in reports] == ["New", "Trade"]


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("modify", [("command", "created"), ("orderVersion", "created"), ("order", "updated"),
                    ("executionReport", "created")]),
        ("cancel", [("command", "created"), ("order", "updated"),
                    ("executionReport", "created")]),
    ],
)  # fmt: skip
def test_events_modify_and_cancel_publish_their_changes(
    action: str, expected: list[tuple[str, str]]
) -> None:
    sim = make_sim()
    order_id = sim.place(BUY, OrderType.LIMIT, price="5990").order_id
    assert order_id is not None
    sim.events.clear()
    if action == "modify":
        assert sim.engine.modify_order(
            order_id, 2, OrderType.LIMIT, sim.order(order_id).version.price, None
        ).ok
    else:
        assert sim.engine.cancel_order(order_id).ok
    assert kinds(sim.events) == expected


def test_events_rejected_order_publishes_order_command_and_report() -> None:
    sim = make_sim(session_closed=True)
    sim.place(BUY)
    assert kinds(sim.events) == [
        ("order", "created"),
        ("orderVersion", "created"),
        ("command", "created"),
        ("executionReport", "created"),
    ]
    assert sim.events[0].entity.ord_status is OrdStatus.REJECTED  # type: ignore[union-attr]


def test_events_user_id_is_the_accounts_user() -> None:
    sim = make_sim()
    sim.place(BUY, account=APEX_ACCOUNT)
    assert {e.user_id for e in sim.events} == {2}


def test_events_every_subscriber_gets_them_until_it_unsubscribes() -> None:
    sim = make_sim()
    second: list[EntityChange] = []
    unsubscribe = sim.engine.subscribe(second.append)
    sim.place(BUY)
    assert kinds(second) == kinds(sim.events)
    unsubscribe()
    unsubscribe()  # twice is harmless
    sim.place(BUY)
    assert len(second) < len(sim.events)


def test_events_failing_subscriber_does_not_break_the_engine() -> None:
    sim = make_sim()

    def broken(change: EntityChange) -> None:
        raise RuntimeError("subscriber bug")

    sim.engine.subscribe(broken)
    later: list[EntityChange] = []
    sim.engine.subscribe(later.append)
    result = sim.place(BUY)
    assert result.ok
    assert sim.order(result.order_id).ord_status is OrdStatus.FILLED
    assert kinds(later) == kinds(sim.events)


def test_events_bracket_activation_publishes_leg_updates() -> None:
    sim = make_sim()
    result = sim.engine.place_oso(
        sim.request(BUY, OrderType.LIMIT, price="5995"),
        BracketRequest(SELL, OrderType.LIMIT, price=d("6010")),
        None,
    )
    sim.events.clear()
    sim.price(ES, "5994")
    leg_events = [
        (e.entity_type, e.event_type, getattr(e.entity, "ord_status", None))
        for e in sim.events
        if getattr(e.entity, "id", None) == result.oso1_id
        or getattr(e.entity, "order_id", None) == result.oso1_id
    ]
    assert leg_events == [
        ("order", "updated", OrdStatus.WORKING),
        ("executionReport", "created", OrdStatus.WORKING),
    ]
