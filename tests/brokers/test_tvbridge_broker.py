"""``TvBridgeBroker`` on the simulator: what goes on the wire and the bridge-only rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio as aioredis
import structlog

from _support.background import SMALL_READS, read_after_the_background_share
from _support.rig import (
    ACCOUNT,
    Rig,
    RigFactory,
    build_adapter,
    front,
    login,
    make_rig,
    order,
    redis_client,
    ticks,
)
from tradebridge.brokers.budget import RequestBudget
from tradebridge.brokers.http import BrokerHttp
from tradebridge.brokers.tvbridge import wire
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker, TvBridgeOptions, _Polled
from tradebridge.config import AccountConfig, TokenConfig, TradovateConfig
from tradebridge.domain.commands import CancelOrder, FlattenPosition
from tradebridge.domain.contracts import ContractSymbol
from tradebridge.domain.enums import Dialect, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName
from tradebridge.domain.orders import OrderAccepted, OrderCancelled, OrderFilled
from tradebridge.errors import (
    AuthError,
    BrokerError,
    BrokerRejected,
    BrokerUnavailable,
    InvalidOrder,
    InvalidSymbol,
    NotFound,
    OutcomeUnknown,
)
from tradebridge.sim.config import SimConfig
from tradebridge.store.tokens import TokenStore

__all__ = ["make_rig", "redis_client"]  # fixtures

BRIDGE = Dialect.TVBRIDGE


@pytest.fixture
async def rig(make_rig: RigFactory) -> AsyncIterator[Rig]:
    """Return a bridge rig on a default simulator."""
    async with make_rig(BRIDGE) as built:
        yield built


def _query(path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(path).query)


async def test_submit_form_lowercase_query_locale_and_request_id(rig: Rig) -> None:
    await rig.broker.submit(
        order("tb-wire-1", OrderType.LIMIT, limit=ticks(rig.last(front()), -100))
    )

    [call] = rig.submits()
    assert _query(call.path) == {"locale": ["en"], "requestId": ["tb-wire-1"]}
    assert call.request_body["side"] == "buy"
    assert call.request_body["type"] == "limit"
    assert call.request_body["durationType"] == "Day"
    assert {"currentBid", "currentAsk"} <= set(call.request_body)
    assert all(_query(c.path).get("locale") == ["en"] for c in rig.calls)


async def test_submit_order_reaches_sim_with_request_id_as_cl_ord_id(rig: Rig) -> None:
    await rig.broker.submit(order("tb-wire-2"))

    [placed] = rig.sim_orders()
    assert placed.cl_ord_id == "tb-wire-2"


async def test_submit_bid_ask_required_by_server_sent(make_rig: RigFactory) -> None:
    async with make_rig(BRIDGE, SimConfig(port=0, require_bid_ask=True)) as rig:
        await rig.broker.submit(order("tb-bidask"))
        assert len(rig.sim_orders()) == 1


async def test_submit_bid_ask_never_on_requiring_server_rejected_with_text(
    make_rig: RigFactory,
) -> None:
    from tradebridge.errors import BrokerRejected

    options = TvBridgeOptions(bid_ask="never", lookup_absent_after_s=0)
    async with make_rig(BRIDGE, SimConfig(port=0, require_bid_ask=True), options=options) as rig:
        with pytest.raises(BrokerRejected, match="currentAsk"):
            await rig.broker.submit(order("tb-nobidask"))
        [call] = rig.submits()
        assert "currentBid" not in call.request_body


@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
async def test_submit_duration_not_advertised_invalid_order_nothing_sent(
    rig: Rig, tif: TimeInForce
) -> None:
    with pytest.raises(InvalidOrder, match="Day, GTC"):
        await rig.broker.submit(order("tb-ioc", tif=tif))

    assert rig.submits() == []


async def test_submit_duration_server_case_used(make_rig: RigFactory) -> None:
    async with make_rig(BRIDGE, SimConfig(port=0, durations=["DAY", "gtc"])) as rig:
        await rig.broker.submit(
            order(
                "tb-case",
                tif=TimeInForce.GTC,
                order_type=OrderType.LIMIT,
                limit=ticks(rig.last(front()), -100),
            )
        )
        assert rig.submits()[0].request_body["durationType"] == "gtc"


async def test_submit_unlisted_contract_invalid_symbol_nothing_sent(rig: Rig) -> None:
    with pytest.raises(InvalidSymbol, match="not among the instruments"):
        await rig.broker.submit(order("tb-far", contract=ContractSymbol("MNQ", 2029, 12)))

    assert rig.submits() == []


async def test_submit_unparseable_answer_outcome_unknown(rig: Rig, monkeypatch: Any) -> None:
    # A proxy answering 200 with an HTML page: forced here, the simulator never does it.
    broker = rig.broker
    assert isinstance(broker, TvBridgeBroker)
    await broker.prepare(order("tb-html"))
    original = broker._interpret

    def html(method: str, path: str, answer: Any, **kw: Any) -> Any:
        if method == "POST":
            return original(method, path, type(answer)(200, "<html>ok</html>", "", {}), **kw)
        return original(method, path, answer, **kw)

    monkeypatch.setattr(broker, "_interpret", html)

    with pytest.raises(OutcomeUnknown):
        await broker.submit(order("tb-html"))
    assert len(rig.sim_orders()) == 1


async def test_route_404_not_found_with_doctor_hint(rig: Rig) -> None:
    broker = rig.broker
    assert isinstance(broker, TvBridgeBroker)

    with pytest.raises(NotFound, match="tradebridge doctor"):
        await broker._call("GET", "/accounts/PAAPEX1361890000010/state")


async def test_token_refused_twice_auth_error_with_fix(rig: Rig) -> None:
    other = await login(rig.sim, BRIDGE)
    broker = rig.broker
    assert isinstance(broker, TvBridgeBroker)
    # Redis holds a token the simulator does not know (another process's key).
    await rig.redis.set(f"token:{ACCOUNT}", other.replace('"accessToken": "', '"accessToken": "x'))

    with pytest.raises(AuthError):
        await broker.accounts()


async def test_accounts_by_name_resolved_from_bridge_list_cached(rig: Rig) -> None:
    broker = rig.broker
    assert isinstance(broker, TvBridgeBroker)

    assert await broker.bridge_id(ACCOUNT) == "D100001"
    assert await broker.bridge_id(ACCOUNT) == "D100001"

    assert len([c for c in rig.calls if c.path.startswith("/accounts?")]) == 1


@pytest.mark.parametrize(
    ("flatten", "closing_posts"), [("close_position", 0), ("market_order", 1), ("auto", 0)]
)
async def test_flatten_modes_close_position(
    make_rig: RigFactory, flatten: str, closing_posts: int
) -> None:
    options = TvBridgeOptions(flatten=flatten, lookup_absent_after_s=0)  # type: ignore[arg-type]
    async with make_rig(BRIDGE, options=options) as rig:
        await rig.broker.submit(order("tb-flat", quantity=2, side=Side.SELL))

        await rig.broker.flatten(FlattenPosition(ACCOUNT, front()))

        assert [p for p in await rig.broker.position_reports(ACCOUNT) if p.net_qty] == []
        assert len(rig.submits()) == 1 + closing_posts


async def test_flatten_close_position_answered_401_is_not_sent_again(
    make_rig: RigFactory,
) -> None:
    # The close executed and its answer was a 401 (a token rotated mid-flight): a second
    # DELETE would close whatever position the account holds by then. The flatten fails as
    # an unknown outcome instead (its row runs it again from a fresh read of the position).
    options = TvBridgeOptions(flatten="close_position", lookup_absent_after_s=0)
    async with make_rig(BRIDGE, options=options, password="demo") as rig:
        await rig.broker.submit(order("tb-flat-401", quantity=2, side=Side.SELL))
        faults = rig.sim.ctx.faults
        faults.drop_mode = "http_401"
        faults.drop_after_accept_rate = 1.0

        with pytest.raises(BrokerError, match="401 after sending") as caught:
            await rig.broker.flatten(FlattenPosition(ACCOUNT, front()))
        faults.drop_after_accept_rate = 0.0

        assert not isinstance(caught.value, BrokerRejected)
        deletes = [c for c in rig.calls if c.method == "DELETE"]
        assert [c.status for c in deletes] == [401]
        assert [p for p in await rig.broker.position_reports(ACCOUNT) if p.net_qty] == []
        # Run again (as the row's rerun does): flat, so nothing is sent.
        await rig.broker.flatten(FlattenPosition(ACCOUNT, front()))
        assert len([c for c in rig.calls if c.method == "DELETE"]) == 1


class _Events:
    """``broker.events()`` consumed in the background; the polls counted from ``rig.calls``."""

    def __init__(self, rig: Rig, broker: TvBridgeBroker | None = None) -> None:
        self.rig = rig
        self.broker = broker or rig.broker
        self.seen: list[Any] = []
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.broker.events():
            self.seen.append(event)

    def polls(self) -> int:
        return sum(1 for c in self.rig.calls if c.method == "GET" and "/orders?" in c.path + "?")

    def kinds(self, order_id: str) -> list[type]:
        return [type(e.event) for e in self.seen if e.broker_order_id == order_id]

    async def until(self, done: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(15):
                while not done():
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pytest.fail(f"not within 15 s: {what}")

    async def stop(self) -> None:
        await self.broker.close()
        await asyncio.wait_for(self.task, 5)


async def _filled_at_the_sim(rig: Rig, order_id: str | None = None) -> str:
    """Wait until the simulator has ``order_id`` (or any order) filled; return its id."""
    async with asyncio.timeout(15):
        while True:
            for o in rig.sim_orders():
                if o.filled_qty and order_id in (None, str(o.id)):
                    return str(o.id)
            await asyncio.sleep(0.02)


async def test_events_polled_accept_fill_cancel(rig: Rig) -> None:
    last = rig.last(front())
    events = _Events(rig)
    await events.until(lambda: events.polls() >= 1, "the baseline poll")
    resting = await rig.broker.submit(order("tb-ev-1", OrderType.LIMIT, limit=ticks(last, -100)))
    filled = await rig.broker.submit(order("tb-ev-2"))
    await events.until(
        lambda: OrderAccepted in events.kinds(resting) and OrderFilled in events.kinds(filled),
        "accept and fill",
    )
    await rig.broker.cancel(CancelOrder(ACCOUNT, resting))
    await events.until(lambda: OrderCancelled in events.kinds(resting), "the cancel")
    await events.stop()

    assert {e.client_order_id for e in events.seen} == {"tb-ev-1", "tb-ev-2"}


async def test_events_an_order_placed_here_and_filled_before_the_first_poll_reported_in_full(
    rig: Rig,
) -> None:
    # A restart's first alert: placed and filled before the poller's first look. Another
    # process's order in that first look stays reconcile's business.
    other, other_http = build_adapter(BRIDGE, rig.sim, TokenStore(rig.redis, TokenConfig()))
    try:
        foreign = await other.submit(order("tb-other"))
    finally:
        await other.close()
        await other_http.aclose()
    mine = await rig.broker.submit(order("tb-mine"))
    await _filled_at_the_sim(rig, mine)
    await _filled_at_the_sim(rig, foreign)

    events = _Events(rig)
    await events.until(lambda: OrderFilled in events.kinds(mine), "our fill")
    polls = events.polls()
    await events.until(lambda: events.polls() >= polls + 2, "two more polls")
    await events.stop()

    assert events.kinds(mine) == [OrderAccepted, OrderFilled]
    fill = next(e for e in events.seen if isinstance(e.event, OrderFilled))
    assert (fill.client_order_id, fill.event.qty, fill.event.fill_id) == ("tb-mine", 1, f"{mine}@1")
    assert events.kinds(foreign) == []


async def test_events_an_order_known_as_ours_only_after_the_first_poll_reported_in_full(
    rig: Rig, monkeypatch: Any
) -> None:
    # The submit's answer lands after the first poll listed its order (held here, the rare
    # ordering): the next poll reports it in full.
    broker = rig.broker
    assert isinstance(broker, TvBridgeBroker)
    answered = asyncio.Event()
    original = broker._call

    async def late(*args: Any, **kwargs: Any) -> Any:
        data = await original(*args, **kwargs)
        if args[0] == "POST":
            await answered.wait()
        return data

    monkeypatch.setattr(broker, "_call", late)
    submit = asyncio.create_task(broker.submit(order("tb-late")))
    held = await _filled_at_the_sim(rig)
    events = _Events(rig)
    await events.until(lambda: events.polls() >= 2, "the first polls")
    assert events.seen == []
    answered.set()
    mine = await submit
    await events.until(lambda: OrderFilled in events.kinds(mine), "our fill")
    await events.stop()

    assert mine == held
    assert events.kinds(mine) == [OrderAccepted, OrderFilled]


async def test_events_poller_forgets_orders_the_listing_no_longer_shows(
    make_rig: RigFactory,
) -> None:
    # Finished orders leave /orders after a while; the poller's memory follows the listing
    # (it held every order of the process's life), and forgetting repeats no event.
    async with make_rig(BRIDGE, SimConfig(port=0, finished_order_linger_s=0.5)) as rig:
        broker = rig.broker
        assert isinstance(broker, TvBridgeBroker)
        events = _Events(rig)
        await events.until(lambda: events.polls() >= 1, "the baseline poll")
        filled = await broker.submit(order("tb-forget-1"))
        resting = await broker.submit(
            order("tb-forget-2", OrderType.LIMIT, limit=ticks(rig.last(front()), -100))
        )
        await events.until(lambda: OrderFilled in events.kinds(filled), "the fill")
        await events.until(lambda: len(broker._polled) == 1, "the filled order forgotten")
        polls = events.polls()
        await events.until(lambda: events.polls() >= polls + 3, "three more polls")
        await events.stop()

    assert events.kinds(filled) == [OrderAccepted, OrderFilled]
    assert events.kinds(resting) == [OrderAccepted]


def _two_accounts(rig: Rig, first: str) -> TvBridgeBroker:
    """Return an adapter for ``first`` (polled first) and ``ACCOUNT``, calls in ``rig.calls``."""
    http = BrokerHttp(rig.sim.url, dialect="tvbridge", timeout_s=5)
    http.add_listener(rig.calls.append)
    return TvBridgeBroker(
        http, TokenStore(rig.redis, TokenConfig()), token_account=ACCOUNT,
        accounts={AccountName(first): None, ACCOUNT: None},
        options=TvBridgeOptions(lookup_absent_after_s=0, poll_interval_s=0.05),
    )  # fmt: skip


async def test_events_an_account_the_bridge_does_not_list_logged_once_others_reported(
    rig: Rig,
) -> None:
    # A configured account /accounts no longer lists (a closed prop account) must not stop
    # the events of the user's other accounts, nor warn on every poll.
    broker = _two_accounts(rig, "PAAPEXCLOSED01")
    with structlog.testing.capture_logs() as logs:
        events = _Events(rig, broker)
        await events.until(lambda: events.polls() >= 1, "the good account's baseline poll")
        placed = await broker.submit(order("tb-good-account"))
        await events.until(lambda: OrderFilled in events.kinds(placed), "the good account's fill")
        polls = events.polls()
        await events.until(lambda: events.polls() >= polls + 3, "three more polls")
        await events.stop()

    assert events.kinds(placed) == [OrderAccepted, OrderFilled]
    warned = [e for e in logs if e["event"] == "bridge_poll_failed"]
    assert [(e["account"], e["log_level"]) for e in warned] == [("PAAPEXCLOSED01", "warning")]
    assert "does not list this account" in warned[0]["reason"]


async def test_events_an_order_with_an_unknown_status_is_skipped_until_readable(
    rig: Rig, monkeypatch: Any
) -> None:
    # One order the bridge lists with a status we cannot read must not end the stream of
    # every account (nor poison that order): it is logged once, skipped, and reported as
    # soon as its status reads again.
    broker = _two_accounts(rig, "DEMO0000002")
    read = broker._read
    garbled: set[str] = set()

    async def garbling_read(path: str, *args: Any) -> Any:
        data = await read(path, *args)
        if path.endswith("/orders") and isinstance(data, list):
            data = [{**o, "status": "held"} if o.get("id") in garbled else o for o in data]
        return data

    monkeypatch.setattr(broker, "_read", garbling_read)
    with structlog.testing.capture_logs() as logs:
        events = _Events(rig, broker)
        await events.until(lambda: events.polls() >= 2, "both accounts' baseline polls")
        first = await broker.submit(order("tb-garbled"))
        garbled.add(first)
        polls = events.polls()
        await events.until(lambda: events.polls() >= polls + 6, "polls over the garbled order")
        second = await broker.submit(order("tb-other-account", account="DEMO0000002"))
        await events.until(lambda: OrderFilled in events.kinds(second), "the other's fill")
        assert events.kinds(first) == []
        assert not events.task.done()
        garbled.clear()
        await events.until(lambda: OrderFilled in events.kinds(first), "the readable fill")
        await events.stop()

    assert events.kinds(first) == [OrderAccepted, OrderFilled]
    warned = [e for e in logs if e["event"] == "bridge_poll_failed"]
    assert len(warned) == 1, warned
    assert "'held'" in warned[0]["error"]


async def test_events_a_lockout_pauses_every_account_until_closed(rig: Rig) -> None:
    # A 429 is the user's lockout (§6.3): no call for any of its accounts, and the stream
    # stays up (it resumes when the lockout ends) instead of dying on every restart.
    broker = _two_accounts(rig, "DEMO0000002")
    events = _Events(rig, broker)
    await events.until(lambda: events.polls() >= 2, "both accounts' baseline polls")
    rig.sim.ctx.faults.lockout_429_users = ["demo"]
    await events.until(lambda: rig.calls[-1].status == 429, "the lockout")
    locked_at = len(rig.calls)
    # An absence needs a window: 10 poll intervals, 20 calls if the poller went on.
    await asyncio.sleep(10 * broker.options.poll_interval_s)
    calls_during = len(rig.calls) - locked_at
    running = not events.task.done()
    await events.stop()

    assert (running, calls_during) == (True, 0)


async def test_events_an_account_failing_its_first_poll_takes_its_baseline_when_it_recovers(
    rig: Rig, monkeypatch: Any
) -> None:
    # Another process's order on the second account is reconcile's business, however late
    # that account's first good listing comes.
    other, other_http = build_adapter(BRIDGE, rig.sim, TokenStore(rig.redis, TokenConfig()))
    try:
        foreign = await other.submit(order("tb-other", account="DEMO0000002"))
    finally:
        await other.close()
        await other_http.aclose()
    broker = _two_accounts(rig, "DEMO0000002")
    resolve = broker.bridge_id
    failures = [BrokerUnavailable("the bridge did not answer")]

    async def first_poll_fails(account: AccountName) -> str:
        if account == "DEMO0000002" and failures:
            raise failures.pop()
        return await resolve(account)

    monkeypatch.setattr(broker, "bridge_id", first_poll_fails)
    events = _Events(rig, broker)
    await events.until(lambda: not failures and events.polls() >= 4, "the account recovered")
    await events.stop()

    assert events.kinds(foreign) == []


def test_polled_memory_holds_what_the_last_listing_shows() -> None:
    polled = _Polled()
    a, b = AccountName("A"), AccountName("B")

    def wired(order_id: str, filled: int = 0) -> wire.WireOrder:
        return wire.parse_order(
            {"id": order_id, "instrument": "MESZ6", "qty": 1, "side": "buy", "type": "market",
             "status": "filled" if filled else "working", "filledQty": filled}
        )  # fmt: skip

    def mine(o: wire.WireOrder) -> bool:
        return o.id != "foreign"

    assert polled.changes(a, [wired("1"), wired("foreign")], True, mine) == [(None, wired("1"))]
    assert polled.changes(b, [wired("9")], True, mine) == [(None, wired("9"))]
    assert len(polled) == 3
    assert polled.changes(a, [wired("1", 1), wired("foreign")], False, mine) == [
        (wired("1"), wired("1", 1))
    ]
    assert polled.changes(a, [wired("2")], False, mine) == [(None, wired("2"))]
    assert len(polled) == 2  # "1" and "foreign" left A's listing; B's untouched
    assert polled.changes(a, [], False, mine) == []
    assert len(polled) == 1


async def test_order_report_lookup_exact_when_bridge_echoes_request_id(
    make_rig: RigFactory,
) -> None:
    async with make_rig(BRIDGE, SimConfig(port=0, bridge_echo_request_id=True)) as rig:
        command = order("tb-echo", OrderType.LIMIT, limit=ticks(rig.last(front()), -100))
        await rig.broker.submit(order("tb-same-shape", OrderType.LIMIT, limit=command.limit_price))
        ts_sent = datetime.now(UTC)
        placed = await rig.broker.submit(command)

        result = await rig.broker.lookup(command, ts_sent)

        assert result.found is not None
        assert (result.found.broker_order_id, result.probable) == (placed, False)


async def test_two_accounts_one_token_user_paths_use_each_id(
    redis_client: aioredis.Redis, make_rig: RigFactory
) -> None:
    accounts = [
        AccountConfig(name=ACCOUNT, dialect=BRIDGE),
        AccountConfig(name="DEMO0000002", dialect=BRIDGE, bridge_id="D100002"),
    ]
    async with make_rig(BRIDGE, accounts=accounts) as rig:
        await rig.broker.submit(order("tb-a2", account="DEMO0000002"))

        assert rig.submits() == []  # not the first account's path
        posts = [c for c in rig.calls if c.method == "POST"]
        assert posts[0].path.startswith("/accounts/D100002/orders?")


async def test_http_client_is_shared_plumbing(rig: Rig) -> None:
    # Every request goes through BrokerHttp: one audit record per call, redacted.
    await rig.broker.accounts()
    assert isinstance(rig.http, BrokerHttp)
    assert rig.calls
    assert all("Bearer" not in str(c.request_body) for c in rig.calls)


async def test_the_account_list_goes_ahead_of_background_reads_whoever_asks(rig: Rig) -> None:
    # As the native adapter's (test_tradovate_usersync.py): bridge polling is background
    # work, and an order resolving its account's id joins the same listing.
    config = TradovateConfig(**SMALL_READS)
    budget = RequestBudget(config)
    http = BrokerHttp(rig.sim.url, dialect="tvbridge", timeout_s=5, budget=budget)
    broker = TvBridgeBroker(http, TokenStore(rig.redis, TokenConfig()), token_account=ACCOUNT,
                            accounts={ACCOUNT: None}, user="demo")  # fmt: skip

    try:
        found = await read_after_the_background_share(
            budget, "demo", lambda: broker.bridge_id(ACCOUNT)
        )
    finally:
        await http.aclose()
    assert found == "D100001"
