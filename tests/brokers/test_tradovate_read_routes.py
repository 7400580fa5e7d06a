"""TradovateBroker against a simulated broker that lacks ``ldeps`` (and ``deps``) routes.

Reports, lookups and reconcile read the children of orders through ``{entity}/ldeps``; a
broker or proxy that answers 404 there must be read through ``deps``, then ``list``, and
the route that works must be remembered (reference §3, §6.2).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from _support.native import (
    ACCOUNT,
    NativeRig,
    front,
    last_price,
    order,
    redis_client,
    rig,
    sim,
    sim_clock,
)
from tradebridge.brokers.http import BrokerCall
from tradebridge.domain.enums import OrderStatus, OrderType
from tradebridge.domain.ids import AccountName
from tradebridge.errors import (
    BrokerError,
    BrokerRejected,
    BrokerUnavailable,
    Lockout,
    NotFound,
    OutcomeUnknown,
)
from tradebridge.sim.config import FaultConfig

__all__ = ["redis_client", "rig", "sim", "sim_clock"]  # fixtures

CHILDREN = ("orderVersion", "fill", "command", "executionReport")
NO_LDEPS = ["*/ldeps"]
LIST_ONLY = ["*/ldeps", "*/deps"]
# Per simulated broker, the routes that must answer instead.
ROUTES = {
    "no-ldeps": (NO_LDEPS, {"/order/deps", *(f"/{e}/deps" for e in CHILDREN)}),
    "list-only": (LIST_ONLY, {"/order/list", *(f"/{e}/list" for e in CHILDREN)}),
}
missing_routes = pytest.mark.parametrize("broker_kind", list(ROUTES))


def route(call: BrokerCall) -> str:
    return call.path.partition("?")[0]


def answered(calls: list[BrokerCall]) -> set[str]:
    """Return the collection reads of orders and their children that answered 200."""
    entities, reads = ("order", *CHILDREN), ("ldeps", "deps", "list")
    found = set()
    for call in calls:
        _, entity, operation = route(call).split("/", 2)
        if call.status == 200 and entity in entities and operation in reads:
            found.add(route(call))
    return found


async def place_mix(rig: NativeRig) -> None:
    """Place a resting, a filled and a risk-rejected order, and one on the other account."""
    limit = last_price(rig.sim, front()) - 500
    await rig.broker.submit(order("tb-rest", OrderType.LIMIT, limit=limit))
    await rig.broker.submit(order("tb-fill", quantity=3))
    await rig.broker.submit(order("tb-other-account", account="DEMO0000002"))
    rig.sim.ctx.config.max_order_qty = 5
    with pytest.raises(BrokerRejected):
        await rig.broker.submit(order("tb-too-big", quantity=9))


@missing_routes
async def test_reports_broker_without_routes_match_reports_with_them(
    rig: NativeRig, broker_kind: str
) -> None:
    missing, expected = ROUTES[broker_kind]
    await place_mix(rig)
    orders = await rig.broker.order_reports(ACCOUNT)
    fills = await rig.broker.fill_reports(ACCOUNT)
    rig.calls.clear()
    rig.sim.ctx.faults.missing_routes = missing

    without = await rig.broker.order_reports(ACCOUNT)
    without_fills = await rig.broker.fill_reports(ACCOUNT)
    filled = next(r for r in orders if r.status is OrderStatus.FILLED)
    one = await rig.broker.order_report(ACCOUNT, filled.broker_order_id)

    assert without == orders
    assert without_fills == fills
    assert one == filled
    assert {r.status for r in orders} == {
        OrderStatus.WORKING,
        OrderStatus.FILLED,
        OrderStatus.REJECTED,
    }
    assert next(r for r in orders if r.status is OrderStatus.REJECTED).reason
    assert {r.client_order_id for r in orders} == {"tb-rest", "tb-fill", "tb-too-big"}
    assert answered(rig.calls) == expected


@missing_routes
async def test_lookup_lost_submit_broker_without_routes_found_by_client_order_id(
    rig: NativeRig, broker_kind: str
) -> None:
    faults = rig.sim.ctx.faults
    ts_sent = datetime.now(UTC)
    await rig.broker.submit(order("tb-same-shape"))  # only the clOrdId tells them apart
    faults.drop_after_accept_rate = 1.0
    command = order("tb-lost")
    with pytest.raises(OutcomeUnknown):
        await rig.broker.submit(command)
    faults.drop_after_accept_rate = 0.0
    faults.missing_routes = ROUTES[broker_kind][0]

    result = await rig.broker.lookup(command, ts_sent)

    assert result.found is not None
    assert not result.probable
    assert result.found.client_order_id == "tb-lost"
    lost = [o for o in rig.sim.call(rig.sim.ctx.engine.orders) if o.cl_ord_id == "tb-lost"]
    assert [str(o.id) for o in lost] == [result.found.broker_order_id]


@missing_routes
async def test_reads_broker_without_routes_fallback_remembered(
    rig: NativeRig, broker_kind: str
) -> None:
    missing, expected = ROUTES[broker_kind]
    await place_mix(rig)
    rig.sim.ctx.faults.missing_routes = missing

    await rig.broker.order_reports(ACCOUNT)
    first = list(rig.calls)
    rig.calls.clear()
    await rig.broker.order_reports(ACCOUNT)
    await rig.broker.fill_reports(ACCOUNT)

    refused = Counter(route(c) for c in first if c.status == 404)
    assert refused, "the simulator served the missing routes"
    assert set(refused.values()) == {1}  # each missing route was asked once, then skipped
    assert [c.path for c in rig.calls if c.status != 200] == []
    assert answered(rig.calls) == expected


def _lock_out(faults: FaultConfig) -> None:
    faults.lockout_429_users = ["demo"]


def _fail_5xx(faults: FaultConfig) -> None:
    faults.error_5xx_rate = 1.0


@pytest.mark.parametrize(("fault", "error"), [(_fail_5xx, BrokerUnavailable), (_lock_out, Lockout)])
async def test_reads_ldeps_other_error_propagates_without_fallback(
    rig: NativeRig, fault: Callable[[FaultConfig], None], error: type[BrokerError]
) -> None:
    await place_mix(rig)
    faults = rig.sim.ctx.faults
    rig.calls.clear()

    def break_after_orders(call: BrokerCall) -> None:
        if route(call) == "/order/deps":
            fault(faults)  # the orders answered; their children's ldeps will not

    remove = rig.http.add_listener(break_after_orders)
    with pytest.raises(error):
        await rig.broker.order_reports(ACCOUNT)
    remove()
    faults.error_5xx_rate, faults.lockout_429_users = 0.0, []
    failed = [route(c) for c in rig.calls if c.status != 200]
    rig.calls.clear()
    await rig.broker.order_reports(ACCOUNT)

    assert set(failed) == {"/orderVersion/ldeps"}
    assert "/orderVersion/ldeps" in answered(rig.calls)  # ldeps was not given up


async def test_reads_broker_without_any_route_not_found(rig: NativeRig) -> None:
    await rig.broker.connect()
    rig.sim.ctx.faults.missing_routes = ["*/ldeps", "*/deps", "*/list"]

    with pytest.raises(NotFound, match="none of the routes deps/list"):
        await rig.broker.order_reports(AccountName(ACCOUNT))


async def test_positions_broker_without_deps_read_from_the_list(rig: NativeRig) -> None:
    await rig.broker.submit(order("tb-pos", quantity=2))
    expected = await rig.broker.position_reports(AccountName(ACCOUNT))
    rig.sim.ctx.faults.missing_routes = ["position/deps"]

    found = await rig.broker.position_reports(AccountName(ACCOUNT))

    assert found == expected
    assert [p.net_qty for p in found] == [2]
