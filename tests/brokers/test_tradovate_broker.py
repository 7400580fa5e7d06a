"""TradovateBroker against the simulator over loopback: orders, reads, faults, outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from _support.native import (
    ACCOUNT,
    ACCOUNT_ID,
    ACCOUNTS,
    NativeRig,
    front,
    last_price,
    native_config,
    order,
    redis_client,
    rig,
    set_price,
    sim,
    sim_clock,
)
from tradebridge.brokers.tradovate import TradovateBroker
from tradebridge.config import AccountConfig
from tradebridge.domain.commands import Bracket, CancelOrder, FlattenPosition, ModifyOrder
from tradebridge.domain.contracts import ContractSymbol
from tradebridge.domain.enums import Dialect, OrderStatus, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.errors import (
    BrokerRejected,
    BrokerUnavailable,
    ConfigError,
    InvalidInput,
    InvalidSymbol,
    Lockout,
    LookupAmbiguous,
    NotFound,
    OutcomeUnknown,
)
from tradebridge.sim.engine import OrderRequest, SimOrder

__all__ = ["redis_client", "rig", "sim", "sim_clock"]  # fixtures


def sim_order(rig: NativeRig, broker_order_id: str) -> SimOrder:
    found = rig.sim.call(lambda: rig.sim.ctx.engine.order(int(broker_order_id)))
    assert found is not None
    return found


def placed_calls(rig: NativeRig) -> list[str]:
    return [c.path for c in rig.calls if c.path.startswith("/order/place")]


async def test_accounts_demo_user_lists_names_and_ids(rig: NativeRig) -> None:
    accounts = await rig.broker.accounts()

    assert [(a.name, a.native_id) for a in accounts] == [
        ("DEMO0000001", 100001),
        ("DEMO0000002", 100002),
    ]
    assert await rig.broker.account_id(ACCOUNT) == ACCOUNT_ID
    assert await rig.broker.account_name(ACCOUNT_ID) == ACCOUNT


def _prices(order_type: OrderType, last: Decimal) -> tuple[Decimal | None, Decimal | None]:
    # Resting prices far from the market so that nothing fills except market orders.
    far_below, far_above = last - 500, last + 500
    return {
        OrderType.MARKET: (None, None),
        OrderType.LIMIT: (far_below, None),
        OrderType.STOP: (None, far_above),
        OrderType.STOP_LIMIT: (far_above + 1, far_above),
    }[order_type]


@pytest.mark.parametrize("order_type", list(OrderType))
@pytest.mark.parametrize("tif", [TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC,
                                 TimeInForce.FOK, TimeInForce.GTD])  # fmt: skip
async def test_submit_each_type_and_tif_recorded_as_sent(
    rig: NativeRig, order_type: OrderType, tif: TimeInForce
) -> None:
    limit, stop = _prices(order_type, last_price(rig.sim, front()))
    expire = datetime.now(UTC) + timedelta(days=1) if tif is TimeInForce.GTD else None
    cid = f"tb-{order_type}-{tif}"
    command = order(cid, order_type, limit=limit, stop=stop, tif=tif, expire_time=expire)

    broker_id = await rig.broker.submit(command)

    placed = sim_order(rig, broker_id)
    assert placed.account_id == ACCOUNT_ID
    assert placed.version.order_type is order_type
    assert placed.version.time_in_force is tif
    assert placed.version.price == limit
    assert placed.version.stop_price == stop
    assert placed.cl_ord_id == cid
    assert placed.is_automated is True
    assert cid in placed.version.text


async def test_submit_any_order_is_automated_at_the_sim(rig: NativeRig) -> None:
    broker_id = await rig.broker.submit(order("tb-auto"))

    commands = rig.sim.call(lambda: rig.sim.ctx.engine.commands(int(broker_id)))
    assert commands
    assert all(c.is_automated for c in commands)
    assert commands[0].cl_ord_id == "tb-auto"
    body = next(c.request_body for c in rig.calls if c.path == "/order/placeorder")
    assert body["isAutomated"] is True
    assert body["accountSpec"] == ACCOUNT
    assert body["accountId"] == ACCOUNT_ID
    assert body["symbol"] == front().name


async def test_submit_bracket_places_oso_with_opposite_stop_and_limit(rig: NativeRig) -> None:
    last = last_price(rig.sim, front())
    command = order("tb-oso", OrderType.LIMIT, limit=last - 100,
                    bracket=Bracket(stop_loss=last - 150, take_profit=last - 50))  # fmt: skip

    broker_id = await rig.broker.submit(command)

    assert placed_calls(rig) == ["/order/placeoso"]
    legs = rig.sim.call(
        lambda: [o for o in rig.sim.ctx.engine.orders(ACCOUNT_ID) if o.parent_id == int(broker_id)]
    )
    assert sorted((leg.version.order_type, leg.action) for leg in legs) == [
        (OrderType.LIMIT, Side.SELL),
        (OrderType.STOP, Side.SELL),
    ]
    stop_leg = next(leg for leg in legs if leg.version.order_type is OrderType.STOP)
    assert stop_leg.version.stop_price == last - 150
    assert legs[0].linked_id == legs[1].id or legs[0].oco_id == legs[1].oco_id


async def test_cancel_working_order_then_again_too_late(rig: NativeRig) -> None:
    limit = last_price(rig.sim, front()) - 500
    broker_id = await rig.broker.submit(order("tb-cancel", OrderType.LIMIT, limit=limit))

    await rig.broker.cancel(CancelOrder(ACCOUNT, broker_id))

    assert sim_order(rig, broker_id).ord_status == "Canceled"
    with pytest.raises(BrokerRejected) as caught:
        await rig.broker.cancel(CancelOrder(ACCOUNT, broker_id))
    assert caught.value.reason == "TooLate"


async def test_modify_working_order_changes_price_and_qty(rig: NativeRig) -> None:
    limit = last_price(rig.sim, front()) - 500
    broker_id = await rig.broker.submit(order("tb-modify", OrderType.LIMIT, limit=limit))

    await rig.broker.modify(
        ModifyOrder(
            ACCOUNT, broker_id, quantity=2, order_type=OrderType.LIMIT, limit_price=limit + 1
        )
    )

    version = sim_order(rig, broker_id).version
    assert (version.order_qty, version.price) == (2, limit + 1)


async def test_flatten_open_position_closes_it(rig: NativeRig) -> None:
    await rig.broker.submit(order("tb-flat-1", quantity=2))
    assert [p.net_qty for p in await rig.broker.position_reports(ACCOUNT)] == [2]

    await rig.broker.flatten(FlattenPosition(ACCOUNT, front()))

    assert await rig.broker.position_reports(ACCOUNT) == []
    body = next(c.request_body for c in rig.calls if c.path == "/order/liquidateposition")
    assert body["admin"] is False


async def test_reports_after_fill_show_quantity_price_and_client_id(rig: NativeRig) -> None:
    limit = last_price(rig.sim, front()) - 500
    resting = await rig.broker.submit(order("tb-rest", OrderType.LIMIT, limit=limit))
    filled = await rig.broker.submit(order("tb-fill", quantity=3))

    reports = {r.broker_order_id: r for r in await rig.broker.order_reports(ACCOUNT)}
    fills = await rig.broker.fill_reports(ACCOUNT)
    positions = await rig.broker.position_reports(ACCOUNT)

    assert reports[resting].status is OrderStatus.WORKING
    assert reports[resting].client_order_id == "tb-rest"
    assert reports[resting].limit_price == limit
    done = reports[filled]
    assert (done.status, done.filled_qty, done.quantity) == (OrderStatus.FILLED, 3, 3)
    assert done.avg_fill_price is not None
    assert done.contract == front().name
    assert sum(f.qty for f in fills if f.broker_order_id == filled) == 3
    assert [(p.contract, p.net_qty) for p in positions] == [(front().name, 3)]
    one = await rig.broker.order_report(ACCOUNT, filled)
    assert one == done


async def test_order_report_unknown_id_not_found(rig: NativeRig) -> None:
    with pytest.raises(NotFound):
        await rig.broker.order_report(ACCOUNT, BrokerOrderId("999999999"))


@pytest.mark.parametrize(
    ("reason", "text"),
    [("MaxPosLimitReached", "position limit"), ("TradingLocked", "daily loss limit hit")],
)
async def test_submit_failure_reason_raises_rejected_with_reason_and_text(
    rig: NativeRig, reason: str, text: str
) -> None:
    faults = rig.sim.ctx.faults
    faults.inject_failure_text = text
    faults.inject_failure_count = 1
    faults.inject_failure_reason = reason

    with pytest.raises(BrokerRejected) as caught:
        await rig.broker.submit(order("tb-rejected"))

    assert (caught.value.reason, caught.value.text) == (reason, text)
    assert len(placed_calls(rig)) == 1


@pytest.mark.parametrize("reason", ["RiskCheckTimeout", "ExecutionProviderUnavailable"])
async def test_submit_ambiguous_failure_reason_raises_outcome_unknown(
    rig: NativeRig, reason: str
) -> None:
    faults = rig.sim.ctx.faults
    faults.inject_failure_count = 1
    faults.inject_failure_reason = reason

    with pytest.raises(OutcomeUnknown) as caught:
        await rig.broker.submit(order("tb-risk-timeout"))

    assert caught.value.client_order_id == "tb-risk-timeout"


async def test_submit_expired_contract_rejected_locally_nothing_sent(rig: NativeRig) -> None:
    expired = ContractSymbol("MNQ", 2026, 9)

    with pytest.raises(InvalidSymbol, match="expired"):
        await rig.broker.submit(order("tb-expired", contract=expired))

    assert placed_calls(rig) == []
    assert not any(c.path == "/contract/find" for c in rig.calls)


@pytest.mark.parametrize(
    ("account", "match"),
    [("NOPE0000009", "not configured"), ("100001", "numeric account id")],
)
async def test_submit_unknown_account_or_id_as_name_fails_before_any_request(
    rig: NativeRig, account: str, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        await rig.broker.submit(order("tb-acct", account=account))

    assert rig.calls == []


async def test_submit_unknown_contract_invalid_symbol(rig: NativeRig) -> None:
    far_future = ContractSymbol("MNQ", 2027, 1)  # MNQ lists quarterly months only

    with pytest.raises(InvalidSymbol):
        await rig.broker.submit(order("tb-far", contract=far_future))

    assert placed_calls(rig) == []


async def test_reads_5xx_once_retried_and_succeed(rig: NativeRig) -> None:
    faults = rig.sim.ctx.faults
    faults.error_5xx_rate = 1.0

    def heal(call: object) -> None:
        faults.error_5xx_rate = 0.0  # the first answer was a 5xx; the next is healthy

    rig.http.add_listener(heal)

    accounts = await rig.broker.accounts()

    assert len(accounts) == 2
    statuses = [c.status for c in rig.calls if c.path == "/account/list"]
    assert statuses[0] in (500, 502, 503)
    assert statuses[-1] == 200


async def test_reads_5xx_forever_gives_up_within_caps(rig: NativeRig) -> None:
    rig.sim.ctx.faults.error_5xx_rate = 1.0

    with pytest.raises(BrokerUnavailable):
        await rig.broker.accounts()

    assert len([c for c in rig.calls if c.path == "/account/list"]) == 3


async def test_submit_5xx_is_outcome_unknown_and_never_resent(rig: NativeRig) -> None:
    await rig.broker.connect()
    await rig.broker.resolve_contract("MNQ1!", ACCOUNT)
    rig.sim.ctx.faults.error_5xx_rate = 1.0

    with pytest.raises(OutcomeUnknown):
        await rig.broker.submit(order("tb-5xx"))

    assert len(placed_calls(rig)) == 1


@pytest.mark.parametrize("mode", ["reset", "http_500"])
async def test_submit_drop_after_accept_unknown_then_lookup_finds_one(
    rig: NativeRig, mode: str
) -> None:
    faults = rig.sim.ctx.faults
    faults.drop_mode = mode  # type: ignore[assignment]
    faults.drop_after_accept_rate = 1.0
    command = order("tb-dropped")
    ts_sent = datetime.now(UTC)

    with pytest.raises(OutcomeUnknown) as caught:
        await rig.broker.submit(command)
    faults.drop_after_accept_rate = 0.0
    result = await rig.broker.lookup(command, ts_sent)

    assert caught.value.client_order_id == "tb-dropped"
    assert len(placed_calls(rig)) == 1
    assert result.found is not None
    assert not result.probable
    assert result.found.client_order_id == "tb-dropped"
    orders = rig.sim.call(lambda: rig.sim.ctx.engine.orders(ACCOUNT_ID))
    assert [str(o.id) for o in orders] == [result.found.broker_order_id]


async def test_submit_hang_times_out_as_outcome_unknown(rig: NativeRig) -> None:
    faults = rig.sim.ctx.faults
    faults.drop_mode = "hang"
    faults.hang_seconds = 3
    faults.drop_after_accept_rate = 1.0
    impatient = TradovateBroker(native_config(rig.sim, request_timeout_s=0.5), ACCOUNTS, rig.store)

    try:
        with pytest.raises(OutcomeUnknown):
            await impatient.submit(order("tb-hang"))
    finally:
        await impatient.close()

    assert len(rig.sim.call(lambda: rig.sim.ctx.engine.orders(ACCOUNT_ID))) == 1


async def test_lookup_absent_waits_then_looks_again(rig: NativeRig) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    patient = TradovateBroker(
        native_config(rig.sim, lookup_absent_after_s=10), ACCOUNTS, rig.store, sleep=sleep
    )
    try:
        result = await patient.lookup(order("tb-not-yet"), datetime.now(UTC))
    finally:
        await patient.close()

    assert result.absent
    assert len(slept) == 1
    assert 9 < slept[0] <= 10


async def test_lookup_never_sent_is_absent(rig: NativeRig) -> None:
    await rig.broker.submit(order("tb-other", side=Side.SELL))

    result = await rig.broker.lookup(order("tb-never"), datetime.now(UTC) - timedelta(seconds=1))

    assert result.absent


async def test_lookup_order_of_another_client_id_is_never_adopted(rig: NativeRig) -> None:
    # Issue 8: the by-shape fallback took another row's order (same shape, its own clOrdId).
    ts_sent = datetime.now(UTC)
    await rig.broker.submit(order("tb-someone-else", quantity=2))

    result = await rig.broker.lookup(order("tb-mine", quantity=2), ts_sent)

    assert result.absent
    assert any("another clOrdId" in line for line in result.evidence)


async def test_lookup_two_orders_of_other_client_ids_absent_not_unknown_forever(
    rig: NativeRig,
) -> None:
    # Issue 8: with two such orders every lookup raised OutcomeUnknown, round after round.
    ts_sent = datetime.now(UTC)
    await rig.broker.submit(order("tb-other-1", quantity=2))
    await rig.broker.submit(order("tb-other-2", quantity=2))

    result = await rig.broker.lookup(order("tb-mine", quantity=2), ts_sent)

    assert result.absent


def _place_without_client_id(rig: NativeRig, quantity: int) -> None:
    request = OrderRequest(
        account_id=ACCOUNT_ID, symbol=front().name, action=Side.BUY,
        order_type=OrderType.MARKET, order_qty=quantity,
    )  # fmt: skip
    rig.sim.call(lambda: rig.sim.ctx.engine.place_order(request))


async def test_lookup_new_order_without_client_id_left_for_review_by_default(
    rig: NativeRig,
) -> None:
    ts_sent = datetime.now(UTC) - timedelta(seconds=1)
    _place_without_client_id(rig, 2)

    with pytest.raises(LookupAmbiguous) as caught:
        await rig.broker.lookup(order("tb-mine", quantity=2), ts_sent)

    assert len(caught.value.candidates) == 1


async def test_lookup_new_order_without_client_id_adopted_as_probable_when_configured(
    rig: NativeRig,
) -> None:
    adopting = TradovateBroker(native_config(rig.sim, lookup_by_shape="adopt"), ACCOUNTS, rig.store)
    ts_sent = datetime.now(UTC) - timedelta(seconds=1)
    _place_without_client_id(rig, 2)
    try:
        result = await adopting.lookup(order("tb-mine", quantity=2), ts_sent)
    finally:
        await adopting.close()

    assert result.probable
    assert result.found is not None
    assert result.found.quantity == 2


async def test_lookup_order_owned_by_another_row_is_excluded(rig: NativeRig) -> None:
    adopting = TradovateBroker(native_config(rig.sim, lookup_by_shape="adopt"), ACCOUNTS, rig.store)
    ts_sent = datetime.now(UTC) - timedelta(seconds=1)
    _place_without_client_id(rig, 2)
    [placed] = rig.sim.call(lambda: rig.sim.ctx.engine.orders(ACCOUNT_ID))
    try:
        result = await adopting.lookup(
            order("tb-mine", quantity=2), ts_sent, exclude=frozenset({str(placed.id)})
        )
    finally:
        await adopting.close()

    assert result.absent


async def test_resolve_contract_spellings_agree(rig: NativeRig) -> None:
    spellings = ["MNQ1!", "CME_MINI:MNQ1!", "MNQ", front().name]

    resolved = {await rig.broker.resolve_contract(s, ACCOUNT) for s in spellings}

    assert resolved == {front()}
    assert len([c for c in rig.calls if c.path.startswith("/contract/find")]) == 1


async def test_limit_fills_when_price_moves_through(rig: NativeRig) -> None:
    last = last_price(rig.sim, front())
    broker_id = await rig.broker.submit(order("tb-lmt", OrderType.LIMIT, limit=last - 10))

    set_price(rig.sim, front(), last - 20)

    report = await rig.broker.order_report(AccountName(ACCOUNT), broker_id)
    assert report.status is OrderStatus.FILLED
    assert report.avg_fill_price is not None
    assert report.avg_fill_price <= last - 10


async def test_submit_429_after_send_outcome_unknown(rig: NativeRig) -> None:
    await rig.broker.connect()
    await rig.broker.resolve_contract("MNQ1!", ACCOUNT)
    rig.sim.ctx.faults.lockout_429_users = ["demo"]

    with pytest.raises(OutcomeUnknown, match="429"):
        await rig.broker.submit(order("tb-429"))

    assert len(placed_calls(rig)) == 1


async def test_reads_429_lockout_not_retried(rig: NativeRig) -> None:
    rig.sim.ctx.faults.lockout_429_users = ["demo"]

    with pytest.raises(Lockout):
        await rig.broker.accounts()

    assert len(rig.calls) == 1


def test_broker_without_native_account_config_error(rig: NativeRig) -> None:
    bridge_only = [AccountConfig(name="PAAPEX1361890000010", dialect=Dialect.TVBRIDGE)]

    with pytest.raises(ConfigError, match="dialect native"):
        TradovateBroker(native_config(rig.sim), bridge_only, rig.store)


# --- p-ticket penalties on order commands (reference §2.3: "wait p-time seconds, then resend
# the identical body plus "p-ticket": "<value>""; §5.5: "Fast repeated modifications can
# trigger p-tickets. Wait and resend as in §2.3.") ------------------------------------------


def _ticketed(rig: NativeRig, path: str) -> list[bool]:
    """Whether each call to ``path`` carried a p-ticket, in order."""
    return ["p-ticket" in (c.request_body or {}) for c in rig.calls if c.path == path]


async def test_submit_under_order_penalty_resends_with_the_ticket_once(rig: NativeRig) -> None:
    faults = rig.sim.ctx.faults
    faults.order_penalty, faults.penalty_seconds = "ticket", 0

    broker_id = await rig.broker.submit(order("tb-penalty"))

    assert sim_order(rig, broker_id).cl_ord_id == "tb-penalty"
    assert _ticketed(rig, "/order/placeorder") == [False, True]


async def test_cancel_under_order_penalty_resends_with_the_ticket(rig: NativeRig) -> None:
    limit = last_price(rig.sim, front()) - 500
    broker_id = await rig.broker.submit(order("tb-cancel-pen", OrderType.LIMIT, limit=limit))
    faults = rig.sim.ctx.faults
    faults.order_penalty, faults.penalty_seconds = "ticket", 0

    await rig.broker.cancel(CancelOrder(ACCOUNT, broker_id))

    assert sim_order(rig, broker_id).ord_status == "Canceled"
    assert _ticketed(rig, "/order/cancelorder") == [False, True]


async def test_modify_under_order_penalty_resends_with_the_ticket(rig: NativeRig) -> None:
    limit = last_price(rig.sim, front()) - 500
    broker_id = await rig.broker.submit(order("tb-modify-pen", OrderType.LIMIT, limit=limit))
    faults = rig.sim.ctx.faults
    faults.order_penalty, faults.penalty_seconds = "ticket", 0

    await rig.broker.modify(
        ModifyOrder(
            ACCOUNT, broker_id, quantity=1, order_type=OrderType.LIMIT, limit_price=limit + 1
        )
    )

    assert sim_order(rig, broker_id).version.price == limit + 1
    assert _ticketed(rig, "/order/modifyorder") == [False, True]
