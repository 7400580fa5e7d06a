"""The user-sync WebSocket against the simulator: events for fills, cancels, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from _support.background import SMALL_READS, read_after_the_background_share
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
    sim,
    sim_clock,
)
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.brokers.budget import RequestBudget
from tradebridge.brokers.http import BrokerHttp
from tradebridge.brokers.tradovate import SyncMirror
from tradebridge.brokers.tradovate.broker import TradovateBroker
from tradebridge.config import EventNamesConfig
from tradebridge.domain.calls import BrokerCall
from tradebridge.domain.commands import CancelOrder
from tradebridge.domain.enums import OrderType
from tradebridge.domain.orders import OrderAccepted, OrderCancelled, OrderFilled
from tradebridge.errors import BrokerRejected, BrokerUnavailable, OutcomeUnknown

__all__ = ["redis_client", "rig", "sim", "sim_clock"]  # fixtures


class Collector:
    """Consumes ``broker.events()`` in the background."""

    def __init__(self) -> None:
        self.events: list[BrokerOrderEvent] = []
        self.changed = asyncio.Event()

    async def consume(self, stream: AsyncIterator[BrokerOrderEvent]) -> None:
        async for event in stream:
            self.events.append(event)
            self.changed.set()

    async def wait_for(self, broker_order_id: str, kind: type, within_s: float = 10) -> object:
        async with asyncio.timeout(within_s):
            while True:
                for event in self.events:
                    if event.broker_order_id == broker_order_id and isinstance(event.event, kind):
                        return event.event
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def following(broker: TradovateBroker) -> AsyncIterator[Collector]:
    """Start the broker's event stream and wait until the socket is synced."""
    found = Collector()
    task = asyncio.create_task(found.consume(broker.events()))
    try:
        async with asyncio.timeout(10):
            while not broker.user_syncs():
                await asyncio.sleep(0.01)
        await broker.user_syncs()[0].wait_synced(10)
        yield found
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def collector(rig: NativeRig) -> AsyncIterator[Collector]:
    """The rig's broker, followed (``following``)."""
    async with following(rig.broker) as found:
        yield found


async def test_usersync_market_fill_emits_accepted_and_filled(
    rig: NativeRig, collector: Collector
) -> None:
    broker_id = await rig.broker.submit(order("tb-ws-fill", quantity=2))

    accepted = await collector.wait_for(broker_id, OrderAccepted)
    filled = await collector.wait_for(broker_id, OrderFilled)

    assert isinstance(accepted, OrderAccepted)
    assert isinstance(filled, OrderFilled)
    assert filled.qty == 2
    assert filled.price > 0
    event = next(e for e in collector.events if e.broker_order_id == broker_id)
    assert event.account == ACCOUNT


async def test_usersync_cancel_emits_cancelled(rig: NativeRig, collector: Collector) -> None:
    limit = last_price(rig.sim, front()) - 500
    broker_id = await rig.broker.submit(order("tb-ws-cancel", OrderType.LIMIT, limit=limit))
    await collector.wait_for(broker_id, OrderAccepted)

    await rig.broker.cancel(CancelOrder(ACCOUNT, broker_id))

    await collector.wait_for(broker_id, OrderCancelled)


async def test_usersync_heartbeats_keep_socket_past_server_timeout(
    rig: NativeRig, collector: Collector
) -> None:
    sync = rig.broker.user_syncs()[0]
    rig.sim.ctx.config.heartbeat_timeout_s = 1.0  # the server drops clients silent for 1 s

    await asyncio.sleep(2.5)

    assert sync.connects == 1
    assert sync.synced.is_set()


async def test_usersync_reconnect_snapshot_emits_changes_made_while_down(
    rig: NativeRig, collector: Collector
) -> None:
    sync = rig.broker.user_syncs()[0]
    await sync.stop()
    broker_id = await rig.broker.submit(order("tb-while-down"))
    assert not any(e.broker_order_id == broker_id for e in collector.events)

    await sync.start()

    filled = await collector.wait_for(broker_id, OrderFilled)
    assert isinstance(filled, OrderFilled)
    assert sync.connects == 2


async def test_usersync_order_filled_before_the_first_snapshot_reported(rig: NativeRig) -> None:
    # A restart's first alert: placed and filled before the socket's first snapshot.
    broker_id = await rig.broker.submit(order("tb-before-sync"))
    async with asyncio.timeout(10):
        while not any(
            str(o.id) == broker_id and o.filled_qty
            for o in rig.sim.call(lambda: rig.sim.ctx.engine.orders(ACCOUNT_ID))
        ):
            await asyncio.sleep(0.02)

    async with following(rig.broker) as collector:
        filled = await collector.wait_for(broker_id, OrderFilled)

    assert isinstance(filled, OrderFilled)
    assert filled.qty == 1
    assert [type(e.event) for e in collector.events if e.broker_order_id == broker_id] == [
        OrderAccepted,
        OrderFilled,
    ]


async def test_usersync_dropped_socket_reconnects_and_streams(
    rig: NativeRig, collector: Collector
) -> None:
    sync = rig.broker.user_syncs()[0]

    await sync.drop()
    async with asyncio.timeout(10):
        while sync.connects < 2 or not sync.synced.is_set():
            await asyncio.sleep(0.02)
    broker_id = await rig.broker.submit(order("tb-after-drop"))

    await collector.wait_for(broker_id, OrderFilled)


def _snapshot(*, status: str = "Working", fills: int = 0) -> dict[str, object]:
    return {
        "accounts": [{"id": 7, "name": "ACC7"}],
        "commands": [{"id": 1, "orderId": 11, "clOrdId": "tb-x", "commandType": "New"}],
        "orders": [{"id": 11, "accountId": 7, "contractId": 3, "action": "Buy",
                    "ordStatus": status, "timestamp": "2026-11-25T15:00:00Z"}],
        "fills": [{"id": 100 + n, "orderId": 11, "contractId": 3, "action": "Buy", "qty": 1,
                   "price": 21000.25, "timestamp": "2026-11-25T15:00:01Z"}
                  for n in range(fills)],
    }  # fmt: skip


def test_mirror_first_snapshot_seeds_silently_later_ones_diff() -> None:
    mirror = SyncMirror(EventNamesConfig(), {})

    first = mirror.apply_snapshot(_snapshot())
    second = mirror.apply_snapshot(_snapshot(status="Filled", fills=2))
    third = mirror.apply_snapshot(_snapshot(status="Filled", fills=2))

    assert first == []
    assert [type(e.event) for e in second] == [OrderFilled, OrderFilled]
    assert {e.client_order_id for e in second} == {"tb-x"}
    assert {e.account for e in second} == {"ACC7"}
    assert second[0].event == OrderFilled(1, Decimal("21000.25"), second[0].event.ts_event, "100")
    assert third == []


def test_mirror_first_snapshot_reports_orders_created_since_its_start() -> None:
    # What happened before the socket synced to orders of the worker's time (a restart's
    # first alert, filled at once) is reported; older orders are reconcile's business.
    created = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    recent = SyncMirror(EventNamesConfig(), {}, first_since=created)
    old = SyncMirror(EventNamesConfig(), {}, first_since=created + timedelta(seconds=1))

    reported = recent.apply_snapshot(_snapshot(status="Filled", fills=1))
    silent = old.apply_snapshot(_snapshot(status="Filled", fills=1))
    again = recent.apply_snapshot(_snapshot(status="Filled", fills=1))

    assert [type(e.event) for e in reported] == [OrderAccepted, OrderFilled]
    assert {e.client_order_id for e in reported} == {"tb-x"}
    assert silent == []
    assert again == []


def test_mirror_quiet_fills_of_an_open_order_go_out_before_its_next_event() -> None:
    # A fill made while no process ran: the first snapshot keeps quiet about the old order,
    # its cancel must not reach the tracker before that fill (the row would end short).
    created = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    mirror = SyncMirror(EventNamesConfig(), {}, first_since=created + timedelta(seconds=1))
    snapshot = _snapshot(status="Working", fills=1)

    silent = mirror.apply_snapshot(snapshot)
    order = {**snapshot["orders"][0], "ordStatus": "Canceled"}  # type: ignore[index]
    ended = mirror.apply_props({"entityType": "order", "eventType": "Updated", "entity": order})
    again = mirror.apply_props({"entityType": "order", "eventType": "Updated", "entity": order})

    assert silent == []
    assert [type(e.event) for e in ended] == [OrderFilled, OrderCancelled]
    assert ended[0].event.fill_id == "100"  # type: ignore[union-attr]
    assert again == []


def test_mirror_quiet_fills_of_a_final_order_stay_quiet() -> None:
    created = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
    mirror = SyncMirror(EventNamesConfig(), {}, first_since=created + timedelta(seconds=1))
    mirror.apply_snapshot(_snapshot(status="Filled", fills=1))

    later = mirror.apply_snapshot(_snapshot(status="Filled", fills=1))

    assert later == []


def test_mirror_props_with_custom_names_emit_events() -> None:
    names = EventNamesConfig(order="Order", fill="Fill", created="New")
    mirror = SyncMirror(names, {7: "ACC7"})
    snapshot = _snapshot(fills=1)

    accepted = mirror.apply_props(
        {"entityType": "Order", "eventType": "New", "entity": snapshot["orders"][0]}  # type: ignore[index]
    )
    filled = mirror.apply_props(
        {"entityType": "Fill", "eventType": "New", "entity": snapshot["fills"][0]}  # type: ignore[index]
    )
    ignored = mirror.apply_props(
        {"entityType": "order", "eventType": "New", "entity": snapshot["orders"][0]}  # type: ignore[index]
    )

    assert [type(e.event) for e in accepted + filled] == [OrderAccepted, OrderFilled]
    assert ignored == []


def test_mirror_names_strategy_orders_by_uuid_with_configured_names() -> None:
    names = EventNamesConfig(order_strategy="OS", order_strategy_link="OSL")
    mirror = SyncMirror(names, {7: "ACC7"}, entry_label="Main")
    strategy = {"id": 90, "accountId": 7, "uuid": "tb-s", "status": "ActiveStrategy"}

    def order(order_id: int) -> dict[str, object]:
        return {"id": order_id, "accountId": 7, "contractId": 5, "action": "Buy",
                "ordStatus": "Working"}  # fmt: skip

    def props(kind: str, entity: dict[str, object]) -> list[BrokerOrderEvent]:
        return mirror.apply_props({"entityType": kind, "eventType": "Created", "entity": entity})

    props("OS", strategy)
    props("OSL", {"id": 1, "orderStrategyId": 90, "orderId": 301, "label": "Other"})
    props("OSL", {"id": 2, "orderStrategyId": 90, "orderId": 302, "label": "Main"})
    leg = props("order", order(301))
    entry = props("order", order(302))
    unknown_kind = props("orderStrategy", {**strategy, "id": 91, "uuid": "tb-other"})

    assert [e.client_order_id for e in entry] == ["tb-s"]
    assert [e.client_order_id for e in leg] == ["tb-s-leg"]
    assert unknown_kind == []
    assert 91 not in mirror.strategy_uuids


# --- positions from the socket (tradovate.positions_from_sync) -----------------------------------
def _position(net: int, *, account: int = 7, contract: int = 3) -> dict[str, object]:
    return {"id": 60 + contract, "accountId": account, "contractId": contract, "netPos": net}


def _props(kind: str, entity: dict[str, object]) -> dict[str, object]:
    return {"entityType": kind, "eventType": "Updated", "entity": entity}


def _fill(fill_id: int, order_id: int = 11) -> dict[str, object]:
    return {"id": fill_id, "orderId": order_id, "contractId": 3, "action": "Buy", "qty": 1,
            "price": 21000.25, "timestamp": "2026-11-25T15:00:01Z"}  # fmt: skip


def test_mirror_positions_current_only_when_position_follows_every_fill() -> None:
    mirror = SyncMirror(EventNamesConfig(), {})
    mirror.apply_snapshot({**_snapshot(), "positions": [_position(0)]})
    assert [p.net_pos for p in mirror.positions_of(7) or []] == [0]

    mirror.apply_props(_props("fill", _fill(101)))
    after_fill = mirror.positions_of(7)
    mirror.apply_props(_props("position", _position(1)))
    after_position = mirror.positions_of(7)

    assert after_fill is None  # the fill is newer than the position the mirror has
    assert [p.net_pos for p in after_position or []] == [1]
    assert mirror.positions_of(8) == []  # another account: nothing of it is stale


def test_mirror_positions_unknown_without_snapshot_positions_or_with_orders_not_final() -> None:
    bare = SyncMirror(EventNamesConfig(), {})
    bare.apply_snapshot(_snapshot())  # the snapshot lists no positions: never trusted
    mirror = SyncMirror(EventNamesConfig(), {})
    mirror.apply_snapshot({**_snapshot(status="Working"), "positions": []})

    assert bare.positions_of(7) is None
    assert mirror.positions_of(7, placed=[11]) is None  # placed, still working
    assert mirror.positions_of(7, placed=[12]) is None  # placed, not yet seen at all
    mirror.apply_props(_props("order", {**_snapshot()["orders"][0], "ordStatus": "Canceled"}))  # type: ignore[index]
    assert mirror.positions_of(7, placed=[11]) == []


def test_mirror_positions_fill_before_its_order_or_unreadable_position_not_current() -> None:
    early = SyncMirror(EventNamesConfig(), {})
    early.apply_snapshot({**_snapshot(), "positions": []})
    early.apply_props(_props("fill", _fill(101, order_id=99)))  # its order not seen yet
    broken = SyncMirror(EventNamesConfig(), {})
    broken.apply_snapshot({**_snapshot(), "positions": []})
    broken.apply_props(_props("position", {"accountId": 7}))

    assert early.positions_of(7) is None
    assert broken.positions_of(7) is None
    broken.apply_snapshot({**_snapshot(), "positions": [_position(2)]})
    assert [p.net_pos for p in broken.positions_of(7) or []] == [2]


def _position_reads(rig: NativeRig) -> int:
    return sum(1 for c in rig.calls if c.path.startswith("/position/"))


async def _socket_has_position(rig: NativeRig, net: int, within_s: float = 10) -> None:
    mirror = rig.broker.user_syncs()[0].mirror
    async with asyncio.timeout(within_s):
        while [p.net_pos for p in mirror.positions.values()] != [net]:
            await asyncio.sleep(0.01)


async def test_position_after_fill_read_from_socket_without_rest(
    rig: NativeRig, collector: Collector
) -> None:
    broker_id = await rig.broker.submit(order("tb-pos-sync", quantity=2))
    await collector.wait_for(broker_id, OrderFilled)
    await _socket_has_position(rig, 2)
    reads = _position_reads(rig)

    positions = await rig.broker.position_reports(ACCOUNT)

    assert [(p.contract, p.net_qty) for p in positions] == [(front().name, 2)]
    assert _position_reads(rig) == reads


async def test_after_a_restart_positions_and_orders_need_no_contract_look_up(
    rig: NativeRig, collector: Collector
) -> None:
    # A process that starts with positions open: the snapshot lists their contracts, so the
    # first position read and order (a restart's fan-out) send no contract/item or
    # contract/find, reads that could queue behind reconcile's in the user's budget.
    first = await rig.broker.submit(order("tb-before-restart", quantity=2))
    await collector.wait_for(first, OrderFilled)
    await _socket_has_position(rig, 2)
    config = native_config(rig.sim)
    http = BrokerHttp(config.native_url, dialect="native", timeout_s=config.request_timeout_s,
                      budget=RequestBudget(config))  # fmt: skip
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)
    restarted = TradovateBroker(config, ACCOUNTS, rig.store, http=http)
    try:
        async with following(restarted) as again:
            positions = await restarted.position_reports(ACCOUNT)
            second = await restarted.submit(order("tb-after-restart", quantity=1))
            await again.wait_for(second, OrderFilled)
    finally:
        await restarted.close()
        await http.aclose()
    assert [(p.contract, p.net_qty) for p in positions] == [(front().name, 2)]
    assert [c.path for c in calls if c.path.startswith("/contract/")] == []


@pytest.mark.parametrize(("wait_s", "rest_reads"), [(2.0, 0), (0.0, 1)])
async def test_a_position_read_as_the_socket_starts_waits_for_its_first_snapshot(
    rig: NativeRig, collector: Collector, wait_s: float, rest_reads: int
) -> None:
    # A fan-out right after a restart: each account's position read would be a budgeted
    # REST read while the socket is milliseconds from its snapshot (sync_start_wait_s).
    first = await rig.broker.submit(order("tb-before-start", quantity=2))
    await collector.wait_for(first, OrderFilled)
    await _socket_has_position(rig, 2)
    config = native_config(rig.sim, sync_start_wait_s=wait_s)
    http = BrokerHttp(config.native_url, dialect="native", timeout_s=config.request_timeout_s,
                      budget=RequestBudget(config))  # fmt: skip
    calls: list[BrokerCall] = []
    http.add_listener(calls.append)
    started = TradovateBroker(config, ACCOUNTS, rig.store, http=http)
    following_it = asyncio.create_task(Collector().consume(started.events()))
    try:
        async with asyncio.timeout(10):
            while not started.user_syncs():  # the socket is created, not yet connected
                await asyncio.sleep(0)
        synced_before = started.user_syncs()[0].synced.is_set()
        positions = await started.position_reports(ACCOUNT)
    finally:
        following_it.cancel()
        await asyncio.gather(following_it, return_exceptions=True)
        await started.close()
        await http.aclose()
    assert not synced_before
    assert [(p.contract, p.net_qty) for p in positions] == [(front().name, 2)]
    assert sum(1 for c in calls if c.path.startswith("/position/")) == rest_reads


async def test_position_with_placed_order_working_read_from_rest_until_final(
    rig: NativeRig, collector: Collector
) -> None:
    limit = last_price(rig.sim, front()) - 500
    resting = await rig.broker.submit(order("tb-pos-rest", OrderType.LIMIT, limit=limit))
    await collector.wait_for(resting, OrderAccepted)
    reads = _position_reads(rig)

    working = await rig.broker.position_reports(ACCOUNT)
    rest_reads = _position_reads(rig) - reads
    await rig.broker.cancel(CancelOrder(ACCOUNT, resting))
    await collector.wait_for(resting, OrderCancelled)
    reads = _position_reads(rig)
    cancelled = await rig.broker.position_reports(ACCOUNT)

    assert working == cancelled == []
    assert rest_reads == 1  # its order could still fill: REST
    assert _position_reads(rig) == reads  # final: the socket


async def test_position_after_lost_answer_read_from_rest(
    rig: NativeRig, collector: Collector
) -> None:
    rig.sim.ctx.faults.drop_after_accept_rate = 1.0
    with pytest.raises(OutcomeUnknown):
        await rig.broker.submit(order("tb-pos-lost"))
    rig.sim.ctx.faults.drop_after_accept_rate = 0.0
    await _socket_has_position(rig, 1)
    reads = _position_reads(rig)

    positions = await rig.broker.position_reports(ACCOUNT)

    assert [p.net_qty for p in positions] == [1]
    assert _position_reads(rig) == reads + 1  # sync_blind_s: REST, whatever the socket says


async def test_position_with_positions_from_sync_off_read_from_rest(
    rig: NativeRig, collector: Collector
) -> None:
    rig.broker.config.positions_from_sync = False
    broker_id = await rig.broker.submit(order("tb-pos-off"))
    await collector.wait_for(broker_id, OrderFilled)
    await _socket_has_position(rig, 1)
    reads = _position_reads(rig)

    positions = await rig.broker.position_reports(ACCOUNT)

    assert [p.net_qty for p in positions] == [1]
    assert _position_reads(rig) == reads + 1


async def test_the_account_list_goes_ahead_of_background_reads_whoever_asks(
    rig: NativeRig,
) -> None:
    # The tracker (background work) lists the accounts as it starts the sockets, and an
    # order's lookup joins that listing (one per user). Left in the background share, used
    # up by reconcile's look-ups after a restart, the listing held the sockets back, so the
    # position reads went to REST and used up the rest of the window: a cold fan-out round
    # waited 19 s, the next 38 s.
    config = native_config(rig.sim, **SMALL_READS)
    budget = RequestBudget(config)
    http = BrokerHttp(config.native_url, dialect="native", timeout_s=config.request_timeout_s,
                      budget=budget)  # fmt: skip
    broker = TradovateBroker(config, ACCOUNTS, rig.store, http=http, user="demo")

    try:
        found = await read_after_the_background_share(
            budget, "demo", lambda: broker.account_id(ACCOUNT)
        )
    finally:
        await broker.close()
        await http.aclose()
    assert found == ACCOUNT_ID


async def test_close_from_a_cancelled_task_stops_every_socket_and_the_http_pool(
    rig: NativeRig,
) -> None:
    # A shutdown by cancellation (the serve task cancelled) closes the adapters from a task
    # that is itself being cancelled: the first socket's stop re-raised that cancellation and
    # the other sockets ran on, the HTTP pool open ("Unclosed client session" at GC).
    config = native_config(rig.sim)
    broker = TradovateBroker(config, ACCOUNTS, rig.store)  # its own HTTP pool
    async with following(broker):
        syncs = broker.user_syncs()
    assert syncs
    closed = asyncio.Event()

    async def serving_until_cancelled() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await broker.close()
            closed.set()

    task = asyncio.create_task(serving_until_cancelled())
    await asyncio.sleep(0)  # it waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()
    assert broker.user_syncs() == []
    assert all(sync._task is None for sync in syncs)  # each socket's loop ended
    with pytest.raises(BrokerUnavailable):  # its pool is closed
        await broker.http.request("GET", "/account/list")


async def test_position_after_a_cancel_refused_as_too_late_read_from_rest(
    rig: NativeRig, collector: Collector
) -> None:
    # "Too late": the order filled, and the socket may not have shown it yet; an exit sized
    # from the socket's position would open one (dispatch/_legs.py). REST for sync_blind_s.
    filled = await rig.broker.submit(order("tb-pos-late"))
    await collector.wait_for(filled, OrderFilled)
    await _socket_has_position(rig, 1)
    with pytest.raises(BrokerRejected) as refused:
        await rig.broker.cancel(CancelOrder(ACCOUNT, filled))
    reads = _position_reads(rig)

    positions = await rig.broker.position_reports(ACCOUNT)

    assert refused.value.reason == "TooLate"
    assert [p.net_qty for p in positions] == [1]
    assert _position_reads(rig) == reads + 1  # sync_blind_s: REST, whatever the socket says


def _version(version_id: int, qty: int, order_id: int = 11) -> dict[str, object]:
    return {"id": version_id, "orderId": order_id, "orderQty": qty, "orderType": "Limit",
            "price": 20990.25}  # fmt: skip


def test_mirror_working_orders_with_their_latest_version_and_fills() -> None:
    mirror = SyncMirror(EventNamesConfig(), {})
    assert mirror.working_of(7) is None  # not synced yet

    mirror.apply_snapshot({**_snapshot(fills=1), "orderVersions": [_version(1, 3)]})
    mirror.apply_props(_props("orderVersion", _version(2, 4)))  # resized at the broker
    working = mirror.working_of(7)

    assert working is not None
    assert [(o.id, v.order_qty, filled, entry) for o, v, filled, entry in working] == [
        (11, 4, 1, None)
    ]
    assert mirror.client_id(11) == "tb-x"
    assert mirror.working_of(8) == []  # another account
    mirror.apply_props(_props("order", {**_snapshot()["orders"][0], "ordStatus": "Filled"}))  # type: ignore[index]
    assert mirror.working_of(7) == []


def test_mirror_working_orders_unknown_while_a_version_is_missing() -> None:
    mirror = SyncMirror(EventNamesConfig(), {})
    mirror.apply_snapshot(_snapshot())  # its order's version has not arrived

    assert mirror.working_of(7) is None
    mirror.apply_props(_props("orderVersion", _version(1, 2)))
    assert mirror.working_of(7) is not None
