"""The one contract every ``Broker`` adapter passes, case by numbered case, on the simulator.

Each case runs for both adapters (see ``conftest.ADAPTERS``). Where the dialects
legitimately differ (which identifier counts as "the id where the name belongs"), the case
says so in a small table keyed by dialect.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from _support.rig import ACCOUNT, ACCOUNT_ID, Rig, RigFactory, front, login, order, ticks
from tradebridge.brokers.tvbridge.broker import TvBridgeOptions
from tradebridge.config import AccountConfig, TokenConfig
from tradebridge.domain.commands import (
    Bracket,
    CancelOrder,
    FlattenPosition,
    ModifyOrder,
    SubmitOrder,
)
from tradebridge.domain.contracts import ContractSymbol
from tradebridge.domain.enums import Dialect, OrderStatus, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, BrokerOrderId
from tradebridge.domain.reports import LookupBaseline
from tradebridge.errors import (
    BrokerRejected,
    BrokerUnavailable,
    InvalidInput,
    InvalidSymbol,
    Lockout,
    LoginFailed,
    LookupAmbiguous,
    OutcomeUnknown,
)
from tradebridge.sim.clock import ManualClock
from tradebridge.sim.config import SimConfig

pytestmark = pytest.mark.filterwarnings("error")


def _prices(order_type: OrderType, last: Decimal) -> tuple[Decimal | None, Decimal | None]:
    """Return (limit, stop) that rest: buy limits below, buy stops above the market."""
    if order_type is OrderType.LIMIT:
        return ticks(last, -200), None
    if order_type is OrderType.STOP:
        return None, ticks(last, 200)
    if order_type is OrderType.STOP_LIMIT:
        return ticks(last, 204), ticks(last, 200)
    return None, None


async def _report(rig: Rig, broker_order_id: str) -> OrderStatus:
    return (await rig.broker.order_report(ACCOUNT, BrokerOrderId(broker_order_id))).status


@pytest.mark.parametrize("tif", [TimeInForce.DAY, TimeInForce.GTC])
@pytest.mark.parametrize(
    "order_type", [OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT]
)
async def test_c01_submit_every_type_and_tif_accepted_and_reported(
    rig: Rig, order_type: OrderType, tif: TimeInForce
) -> None:
    contract = front()
    limit, stop = _prices(order_type, rig.last(contract))
    command = order(f"tb-c01-{order_type}-{tif}", order_type, limit=limit, stop=stop, tif=tif)

    broker_id = await rig.broker.submit(command)

    report = await rig.broker.order_report(ACCOUNT, broker_id)
    assert report.order_type is order_type
    assert report.side is Side.BUY
    assert report.limit_price == limit
    assert report.stop_price == stop
    expected = OrderStatus.FILLED if order_type is OrderType.MARKET else OrderStatus.WORKING
    assert report.status is expected
    assert len(rig.submits()) == 1


async def test_c02_submit_sell_limit_reported_as_sell(rig: Rig) -> None:
    price = ticks(rig.last(front()), 300)

    broker_id = await rig.broker.submit(
        order("tb-c02", OrderType.LIMIT, side=Side.SELL, limit=price, quantity=3)
    )

    report = await rig.broker.order_report(ACCOUNT, broker_id)
    assert (report.side, report.quantity, report.limit_price) == (Side.SELL, 3, price)


async def test_c03_bracket_market_entry_position_and_two_opposite_legs(rig: Rig) -> None:
    last = rig.last(front())
    bracket = Bracket(stop_loss=ticks(last, -100), take_profit=ticks(last, 100))

    await rig.broker.submit(order("tb-c03", quantity=2, bracket=bracket))

    positions = await rig.broker.position_reports(ACCOUNT)
    assert [(p.contract, p.net_qty) for p in positions] == [(front().name, 2)]
    working = [r for r in await rig.broker.order_reports(ACCOUNT) if r.status.is_open]
    assert sorted((r.side, r.order_type, r.quantity) for r in working) == [
        (Side.SELL, OrderType.LIMIT, 2),
        (Side.SELL, OrderType.STOP, 2),
    ]


async def test_c04_cancel_working_then_again_too_late(rig: Rig) -> None:
    limit = ticks(rig.last(front()), -200)
    broker_id = await rig.broker.submit(order("tb-c04", OrderType.LIMIT, limit=limit))

    await rig.broker.cancel(CancelOrder(ACCOUNT, broker_id))

    assert await _report(rig, broker_id) is OrderStatus.CANCELLED
    with pytest.raises(BrokerRejected) as caught:
        await rig.broker.cancel(CancelOrder(ACCOUNT, broker_id))
    assert caught.value.reason == "TooLate"


async def test_c05_modify_working_changes_price_and_qty(rig: Rig) -> None:
    limit = ticks(rig.last(front()), -200)
    broker_id = await rig.broker.submit(order("tb-c05", OrderType.LIMIT, limit=limit))

    await rig.broker.modify(ModifyOrder(ACCOUNT, broker_id, 3, OrderType.LIMIT, limit - 1))

    report = await rig.broker.order_report(ACCOUNT, broker_id)
    assert (report.quantity, report.limit_price, report.status) == (
        3,
        limit - 1,
        OrderStatus.WORKING,
    )


async def test_c06_flatten_cancels_working_and_closes_position(rig: Rig) -> None:
    contract = front()
    await rig.broker.submit(order("tb-c06-entry", quantity=2))
    resting = await rig.broker.submit(
        order("tb-c06-rest", OrderType.LIMIT, limit=ticks(rig.last(contract), -200))
    )

    await rig.broker.flatten(FlattenPosition(ACCOUNT, contract))

    positions = [p for p in await rig.broker.position_reports(ACCOUNT) if p.net_qty != 0]
    assert positions == []
    assert await _report(rig, resting) is OrderStatus.CANCELLED


async def test_c07_reports_fill_position_and_order_agree(rig: Rig) -> None:
    broker_id = await rig.broker.submit(order("tb-c07", side=Side.SELL, quantity=2))

    fills = await rig.broker.fill_reports(ACCOUNT)
    positions = await rig.broker.position_reports(ACCOUNT)
    report = await rig.broker.order_report(ACCOUNT, broker_id)

    assert sum(f.qty for f in fills) == 2
    assert {f.side for f in fills} == {Side.SELL}
    assert [(p.net_qty, p.avg_price) for p in positions] == [(-2, report.avg_fill_price)]
    assert (report.status, report.filled_qty) == (OrderStatus.FILLED, 2)
    assert report.client_order_id == "tb-c07"


async def test_c08_rejection_surfaces_tradovate_text(rig: Rig) -> None:
    faults = rig.sim.ctx.faults
    faults.inject_failure_reason = "AccountClosed"
    faults.inject_failure_text = "Account is closed for trading"
    faults.inject_failure_count = 1

    with pytest.raises(BrokerRejected) as caught:
        await rig.broker.submit(order("tb-c08"))

    assert "Account is closed for trading" in caught.value.text
    assert len(rig.submits()) == 1


async def test_c09_expired_contract_refused_before_sending(rig: Rig) -> None:
    expired = ContractSymbol("MNQ", 2025, 12)

    with pytest.raises(InvalidSymbol, match="expired"):
        await rig.broker.submit(order("tb-c09", contract=expired))

    assert rig.submits() == []


async def test_c10_unknown_account_refused_before_sending(rig: Rig) -> None:
    with pytest.raises(InvalidInput):
        await rig.broker.submit(order("tb-c10", account="NOPE0000009"))

    assert rig.submits() == []


# Each dialect's "identifier where the name belongs" mistake: the native numeric id given as
# the account, and the bridge account configured with its name as the path id.
NAME_AS_ID = {
    Dialect.NATIVE: ([AccountConfig(name=ACCOUNT)], "100001", "numeric"),
    Dialect.TVBRIDGE: (
        [AccountConfig(name=ACCOUNT, dialect=Dialect.TVBRIDGE, bridge_id=ACCOUNT)],
        ACCOUNT,
        "ACCOUNT_NAME_USED_AS_ID.*D100001",
    ),
}


async def test_c11_name_and_id_mixed_up_refused_before_sending(
    make_rig: RigFactory, dialect: Dialect
) -> None:
    accounts, account, match = NAME_AS_ID[dialect]
    async with make_rig(dialect, accounts=accounts) as rig:
        with pytest.raises(InvalidInput, match=match):
            await rig.broker.submit(order("tb-c11", account=account))

        assert rig.submits() == []


async def test_c12_token_expires_mid_run_submit_unknown_lookup_absent_resent_once(
    make_rig: RigFactory, dialect: Dialect
) -> None:
    clock = ManualClock(datetime.now(UTC))
    # No /quotes read before the bridge's POST: the order itself meets the expired token.
    options = TvBridgeOptions(bid_ask="never", lookup_absent_after_s=0)
    async with make_rig(
        dialect, SimConfig(port=0), clock, TokenConfig(expiry_margin_s=0), options=options
    ) as rig:
        first = await rig.broker.submit(order("tb-c12-a"))
        command = order("tb-c12-b")
        baseline = await rig.broker.lookup_baseline(command)  # as the dispatcher does
        # The simulator's clock passes the token's expiry; the token service renews it.
        clock.advance(rig.sim.config.token_lifetime_s + 60)
        fresh = await login(rig.sim, dialect)
        for name in (ACCOUNT, "DEMO0000002"):
            await rig.redis.set(f"token:{name}", fresh)
        ts_sent = datetime.now(UTC)

        # The cached token earns a 401: the order may exist (§6.3), so it is not resent...
        with pytest.raises(OutcomeUnknown):
            await rig.broker.submit(command)
        # ...until the lookup (with the renewed token) proves it absent.
        result = await rig.broker.lookup(command, ts_sent, baseline=baseline)
        assert result.absent
        second = await rig.broker.submit(command)

        assert first != second
        assert len(rig.sim_orders()) == 2
        assert [c.status for c in rig.submits()] == [200, 401, 200]


async def test_c13_lockout_429_reads_raise_lockout_submit_unknown(rig: Rig) -> None:
    await rig.broker.accounts()  # resolve before the lockout
    rig.sim.ctx.faults.lockout_429_users = ["*"]

    with pytest.raises(Lockout) as caught:
        await rig.broker.order_reports(ACCOUNT)
    assert caught.value.until > datetime.now(UTC) + timedelta(minutes=30)
    with pytest.raises((Lockout, OutcomeUnknown)):
        await rig.broker.submit(order("tb-c13"))
    assert rig.sim_orders() == []


async def test_c14_read_5xx_once_retried_and_succeeds(rig: Rig) -> None:
    await rig.broker.accounts()
    faults = rig.sim.ctx.faults
    faults.error_5xx_rate = 1.0
    rig.http.add_listener(lambda call: setattr(faults, "error_5xx_rate", 0.0))

    reports = await rig.broker.position_reports(ACCOUNT)

    assert reports == []
    statuses = [c.status for c in rig.calls if c.status is not None]
    assert statuses[-2] in (500, 502, 503)
    assert statuses[-1] == 200


async def test_c15_read_5xx_forever_gives_up_unavailable(rig: Rig) -> None:
    await rig.broker.accounts()
    rig.sim.ctx.faults.error_5xx_rate = 1.0

    with pytest.raises(BrokerUnavailable):
        await rig.broker.position_reports(ACCOUNT)


@pytest.mark.parametrize("mode", ["reset", "http_500"])
async def test_c16_accept_then_drop_unknown_lookup_finds_it_sent_once(rig: Rig, mode: str) -> None:
    faults = rig.sim.ctx.faults
    faults.drop_mode = mode  # type: ignore[assignment]
    limit = ticks(rig.last(front()), -200)
    command = order("tb-c16", OrderType.LIMIT, limit=limit)
    await rig.broker.accounts()
    baseline = await rig.broker.lookup_baseline(command)  # as the dispatcher does (write-ahead)
    faults.drop_after_accept_rate = 1.0
    ts_sent = datetime.now(UTC)

    with pytest.raises(OutcomeUnknown) as caught:
        await rig.broker.submit(command)
    faults.drop_after_accept_rate = 0.0
    result = await rig.broker.lookup(command, ts_sent, baseline=baseline)

    assert caught.value.client_order_id == "tb-c16"
    assert result.found is not None
    assert [str(o.id) for o in rig.sim_orders()] == [result.found.broker_order_id]
    assert len(rig.submits()) == 1


@pytest.mark.parametrize("status", [408, 409, 423, 499])
async def test_c16d_accept_then_other_4xx_unknown_never_rejected(rig: Rig, status: int) -> None:
    # Only 400 and 404 (and the HTTP layer's refusals of a request as written) prove that
    # nothing executed (§6.2). A proxy's 408, a 409, a 423 or an undocumented code may come
    # after the order executed: the outcome is unknown and the lookup decides (§6.3).
    faults = rig.sim.ctx.faults
    faults.drop_mode, faults.drop_status = "http_4xx", status
    limit = ticks(rig.last(front()), -200)
    command = order("tb-c16d", OrderType.LIMIT, limit=limit)
    await rig.broker.accounts()
    baseline = await rig.broker.lookup_baseline(command)
    faults.drop_after_accept_rate = 1.0
    ts_sent = datetime.now(UTC)

    with pytest.raises(OutcomeUnknown) as caught:
        await rig.broker.submit(command)
    faults.drop_after_accept_rate = 0.0

    assert caught.value.client_order_id == "tb-c16d"
    assert f"HTTP {status}" in str(caught.value)
    assert len(rig.submits()) == 1
    if status == 423:  # a lockout as well: no lookup for an hour (c13)
        return
    result = await rig.broker.lookup(command, ts_sent, baseline=baseline)
    assert result.found is not None
    assert [str(o.id) for o in rig.sim_orders()] == [result.found.broker_order_id]


async def test_c16b_accept_then_401_unknown_token_renewed_lookup_adopts_sent_once(
    make_rig: RigFactory, dialect: Dialect
) -> None:
    # The token expires (or is rotated) while the order is in flight: executed, answered
    # 401 (§6.3 "check whether the order exists before resubmitting", §11.2 rule 3).
    async with make_rig(dialect, password="demo") as rig:  # renews by logging in afresh
        command = order("tb-c16b", OrderType.LIMIT, limit=ticks(rig.last(front()), -200))
        baseline = await rig.broker.lookup_baseline(command)
        faults = rig.sim.ctx.faults
        faults.drop_mode = "http_401"
        faults.drop_after_accept_rate = 1.0
        ts_sent = datetime.now(UTC)

        with pytest.raises(OutcomeUnknown, match="401") as caught:
            await rig.broker.submit(command)
        faults.drop_after_accept_rate = 0.0
        result = await rig.broker.lookup(command, ts_sent, baseline=baseline)

        assert caught.value.client_order_id == "tb-c16b"
        assert "renewed" in str(caught.value)
        assert [c.status for c in rig.submits()] == [401]
        assert len(rig.logins()) == 2  # the start, and the renewal after the 401
        assert result.found is not None
        assert [str(o.id) for o in rig.sim_orders()] == [result.found.broker_order_id]


async def test_c16c_accept_then_401_no_fresh_token_unknown_lookup_waits_for_one(
    rig: Rig,
) -> None:
    # No token service renewed it yet: still unknown (never "not sent"); the lookup
    # works once a fresh token is in Redis.
    command = order("tb-c16c", OrderType.LIMIT, limit=ticks(rig.last(front()), -200))
    baseline = await rig.broker.lookup_baseline(command)
    faults = rig.sim.ctx.faults
    faults.drop_mode = "http_401"
    faults.drop_after_accept_rate = 1.0
    ts_sent = datetime.now(UTC)

    with pytest.raises(OutcomeUnknown, match="renewing the token failed"):
        await rig.broker.submit(command)
    faults.drop_after_accept_rate = 0.0
    fresh = await login(rig.sim, rig.dialect)
    for name in (ACCOUNT, "DEMO0000002"):
        await rig.redis.set(f"token:{name}", fresh)
    result = await rig.broker.lookup(command, ts_sent, baseline=baseline)

    assert [c.status for c in rig.submits()] == [401]
    assert result.found is not None
    assert [str(o.id) for o in rig.sim_orders()] == [result.found.broker_order_id]


async def test_c17_lookup_never_sent_absent(rig: Rig) -> None:
    await rig.broker.submit(order("tb-c17-other", side=Side.SELL))

    result = await rig.broker.lookup(order("tb-c17"), datetime.now(UTC))

    assert result.absent


async def test_c18_submit_hang_times_out_unknown(make_rig: RigFactory, dialect: Dialect) -> None:
    async with make_rig(dialect, timeout_s=0.5) as rig:
        await rig.broker.accounts()
        faults = rig.sim.ctx.faults
        faults.drop_mode = "hang"
        faults.hang_seconds = 2
        faults.drop_after_accept_rate = 1.0

        with pytest.raises(OutcomeUnknown):
            await rig.broker.submit(order("tb-c18"))

        assert len(rig.submits()) == 1
        await asyncio.sleep(0)


async def test_c19_accounts_list_names_with_dialect_ids(rig: Rig) -> None:
    accounts = {a.name: a for a in await rig.broker.accounts()}

    assert set(accounts) >= {"DEMO0000001", "DEMO0000002"}
    info = accounts["DEMO0000001"]
    if rig.dialect is Dialect.NATIVE:
        assert info.native_id == 100001
    else:
        assert info.bridge_id == "D100001"


async def test_c20_order_report_unknown_id_not_found(rig: Rig) -> None:
    from tradebridge.errors import NotFound

    with pytest.raises(NotFound):
        await rig.broker.order_report(ACCOUNT, BrokerOrderId("999999999"))


async def test_c21_capabilities_declared(rig: Rig) -> None:
    caps = rig.broker.capabilities
    assert caps.brackets
    assert caps.modify
    assert caps.flatten
    assert caps.push_events is (rig.dialect is Dialect.NATIVE)


async def test_c22_accounts_of_other_user_not_reachable(rig: Rig) -> None:
    with pytest.raises(InvalidInput):
        await rig.broker.submit(order("tb-c22", account="PAAPEX1361890000010"))
    assert rig.submits() == []


async def test_c23_account_name_type_is_name(rig: Rig) -> None:
    names = [a.name for a in await rig.broker.accounts()]
    assert all(isinstance(n, str) and n == AccountName(n) for n in names)


# A self-managed login that is penalised (native) or refused (bridge): (sim penalty, password,
# error or None, waits out p-time). Tradovate's p-tickets are a native login's; the bridge's
# ``/authorize`` has none (reference §9.3), so there the same setting changes nothing and the
# failure that must not loop is a wrong password.
LOGIN_PENALTY = {
    (Dialect.NATIVE, "recovers"): ("ticket", "demo", None, True),
    (Dialect.NATIVE, "stops"): ("captcha", "demo", Lockout, False),
    (Dialect.TVBRIDGE, "recovers"): ("ticket", "demo", None, False),
    (Dialect.TVBRIDGE, "stops"): ("captcha", "wrong-secret", LoginFailed, False),
}


@pytest.mark.parametrize("outcome", ["recovers", "stops"])
async def test_c24_login_penalty_waited_out_once_or_stops_with_alert(
    make_rig: RigFactory, dialect: Dialect, outcome: str
) -> None:
    penalty, password, refusal, waits = LOGIN_PENALTY[dialect, outcome]
    async with make_rig(dialect, password=password) as rig:
        faults = rig.sim.ctx.faults
        faults.login_penalty = penalty

        if refusal is None:
            broker_id = await rig.broker.submit(order("tb-c24"))
            assert [str(o.id) for o in rig.sim_orders()] == [broker_id]
            assert len(rig.submits()) == 1
            assert rig.alerts == []
        else:
            with pytest.raises(refusal):
                await rig.broker.submit(order("tb-c24"))
            assert rig.sim_orders() == []
            assert rig.submits() == []
            assert len(rig.alerts) == 1

        assert rig.sleeps == ([faults.penalty_seconds] if waits else [])
        # One login, and after a p-ticket one resend carrying it; never a loop.
        resent = ["p-ticket" in (c.request_body or {}) for c in rig.logins()]
        assert resent == ([False, True] if waits else [False])
        assert rig.sim.ctx.auth.logins == (1 if refusal is None else 0)


# --- c25-c30: a lost answer never adopts another order (issue 8) ---------------------------
# The dispatcher takes the baseline before the submit and passes the orders other ledger
# rows own as ``exclude``; these cases do the same by hand.


async def _lost(rig: Rig, command: SubmitOrder) -> tuple[LookupBaseline | None, datetime]:
    """Submit ``command`` with its answer lost; return what a lookup needs afterwards."""
    baseline = await rig.broker.lookup_baseline(command)
    ts_sent = datetime.now(UTC)
    faults = rig.sim.ctx.faults
    faults.drop_mode = "reset"
    faults.drop_after_accept_rate = 1.0
    try:
        with pytest.raises(OutcomeUnknown):
            await rig.broker.submit(command)
    finally:
        faults.drop_after_accept_rate = 0.0
    return baseline, ts_sent


def _own(rig: Rig, client_order_id: str) -> str:
    [mine] = [o for o in rig.sim_orders() if o.cl_ord_id == client_order_id and not o.parent_id]
    return str(mine.id)


def _sell_above(rig: Rig) -> Decimal:
    return ticks(rig.last(front()), 300)


async def test_c25_lost_answer_identical_resting_order_of_another_row_never_adopted(
    rig: Rig,
) -> None:
    price = _sell_above(rig)
    other = await rig.broker.submit(order("tb-c25-a", OrderType.LIMIT, side=Side.SELL, limit=price))
    command = order("tb-c25-b", OrderType.LIMIT, side=Side.SELL, limit=price)
    baseline, ts_sent = await _lost(rig, command)

    result = await rig.broker.lookup(
        command, ts_sent, baseline=baseline, exclude=frozenset({str(other)})
    )

    assert result.found is not None
    assert result.found.broker_order_id == _own(rig, "tb-c25-b") != str(other)


async def test_c26_lost_answer_two_identical_orders_of_other_rows_never_adopted(
    rig: Rig,
) -> None:
    price = _sell_above(rig)
    owned = set()
    for name in ("tb-c26-a1", "tb-c26-a2"):
        owned.add(str(await rig.broker.submit(
            order(name, OrderType.LIMIT, side=Side.SELL, limit=price))))  # fmt: skip
    command = order("tb-c26-b", OrderType.LIMIT, side=Side.SELL, limit=price)
    baseline, ts_sent = await _lost(rig, command)

    result = await rig.broker.lookup(command, ts_sent, baseline=baseline, exclude=frozenset(owned))

    assert result.found is not None
    assert result.found.broker_order_id == _own(rig, "tb-c26-b")


async def test_c27_never_sent_same_shape_other_bracket_absent(rig: Rig) -> None:
    price = _sell_above(rig)
    command = order("tb-c27-b", OrderType.LIMIT, side=Side.SELL, limit=price)
    baseline = await rig.broker.lookup_baseline(command)
    ts_sent = datetime.now(UTC)
    # Placed after our baseline by someone else, with a bracket ours does not have.
    await rig.broker.submit(
        order("tb-c27-x", OrderType.LIMIT, side=Side.SELL, limit=price,
              bracket=Bracket(ticks(price, 20), ticks(price, -20)))
    )  # fmt: skip

    result = await rig.broker.lookup(command, ts_sent, baseline=baseline)

    assert result.absent


async def test_c28_never_sent_order_of_another_process_owned_in_the_ledger_absent(
    rig: Rig,
) -> None:
    price = _sell_above(rig)
    command = order("tb-c28-b", OrderType.LIMIT, side=Side.SELL, limit=price)
    baseline = await rig.broker.lookup_baseline(command)
    ts_sent = datetime.now(UTC)
    theirs = await rig.broker.submit(
        order("tb-c28-x", OrderType.LIMIT, side=Side.SELL, limit=price)
    )

    result = await rig.broker.lookup(
        command, ts_sent, baseline=baseline, exclude=frozenset({str(theirs)})
    )

    assert result.absent


async def test_c29_lost_answer_without_baseline_or_creation_times_never_guessed(
    rig: Rig,
) -> None:
    # The bridge shows neither requestId nor creation times here: with no baseline it cannot
    # tell ours from the other new order, and says so. Native finds its clOrdId.
    price = _sell_above(rig)
    await rig.broker.submit(order("tb-c29-a", OrderType.LIMIT, side=Side.SELL, limit=price))
    command = order("tb-c29-b", OrderType.LIMIT, side=Side.SELL, limit=price)
    _, ts_sent = await _lost(rig, command)

    if rig.dialect is Dialect.NATIVE:
        result = await rig.broker.lookup(command, ts_sent)
        assert result.found is not None
        assert result.found.broker_order_id == _own(rig, "tb-c29-b")
    else:
        with pytest.raises(LookupAmbiguous) as caught:
            await rig.broker.lookup(command, ts_sent)
        assert _own(rig, "tb-c29-b") in caught.value.candidates


async def test_c30_submit_refused_before_execution_same_shape_present_absent(
    rig: Rig,
) -> None:
    price = _sell_above(rig)
    await rig.broker.submit(order("tb-c30-a", OrderType.LIMIT, side=Side.SELL, limit=price))
    command = order("tb-c30-b", OrderType.LIMIT, side=Side.SELL, limit=price)
    baseline = await rig.broker.lookup_baseline(command)
    ts_sent = datetime.now(UTC)
    rig.sim.ctx.faults.error_5xx_writes_only = True
    rig.sim.ctx.faults.error_5xx_rate = 1.0  # refused before execution (the 401 path: tracking)
    with pytest.raises(OutcomeUnknown):
        await rig.broker.submit(command)
    rig.sim.ctx.faults.error_5xx_rate = 0.0

    result = await rig.broker.lookup(command, ts_sent, baseline=baseline)

    assert result.absent
    assert [o.cl_ord_id for o in rig.sim_orders()] == ["tb-c30-a"]


async def test_c31_balance_is_cash_and_open_pnl_as_the_broker_marks_them(rig: Rig) -> None:
    contract = front()
    before = await rig.broker.balance(ACCOUNT)
    await rig.broker.submit(order("tb-c31", quantity=2))
    rig.set_price(contract, ticks(rig.last(contract), -40))  # 10 points down, long 2

    after = await rig.broker.balance(ACCOUNT)

    engine = rig.sim.ctx.engine
    cash = rig.sim.call(lambda: engine.cash_balance(ACCOUNT_ID).amount)
    open_pnl = rig.sim.call(lambda: engine.open_pnl(ACCOUNT_ID))
    assert (before.cash, before.open_pnl) == (cash, Decimal(0))
    assert (after.cash, after.open_pnl) == (cash, open_pnl)
    assert after.open_pnl < 0
    assert after.net_liq == cash + open_pnl
