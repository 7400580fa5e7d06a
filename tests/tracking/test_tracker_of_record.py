"""Several processes follow one event stream: each event is applied by its order's placer, and
read once more by the stream's tracker of record (a session lock), never by every process.
The tracker of record applies what no live placer did; a process that takes over applies the
events it left to the one before."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tracking.conftest import ACCOUNT, FedStream, Stack, until
from tradebridge.brokers.base import BrokerOrderEvent
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.lifecycle import SignalStatus as S
from tradebridge.domain.orders import OrderAccepted, OrderCancelled, OrderFilled
from tradebridge.store.ledger import Ledger, sessions
from tradebridge.tracking.tracker import _LEFT_KEPT, TRACKING_LOCK_NAMESPACE, Tracker, _Share


class _Pool:
    """The broker pool as the tracker asks it: one stream, named alike in every process."""

    def __init__(self, stream: FedStream) -> None:
        self.stream = stream

    async def brokers(self) -> list[tuple[str, FedStream]]:
        return [(ACCOUNT, self.stream)]

    def tracking_key(self) -> str:
        return "tracker:test-stream"


class _Process:
    """A tracker with its own ledger (its own memory of what it placed) and stream."""

    def __init__(self, stack: Stack, ledger: Ledger) -> None:
        self.ledger = ledger
        self.stream = FedStream()
        self.tracker = Tracker(stack.settings, ledger, _Pool(self.stream))  # type: ignore[arg-type]
        self.reads: list[str] = []  # the broker order id of each event whose row it read
        self.task: asyncio.Task[None] | None = None

    def start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        read = self.ledger.event_row

        async def counted(cid: str | None, order_id: str, **kw: Any) -> Any:
            self.reads.append(order_id)
            return await read(cid, order_id, **kw)

        monkeypatch.setattr(self.ledger, "event_row", counted)
        self.task = asyncio.create_task(self.tracker.run())

    def record(self) -> bool | None:
        return self.tracker.of_record()

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def processes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[_Process, _Process]]:
    """Two processes, the first the tracker of record (it started first), both running."""
    other = await Ledger.connect(stack.ledger._url, min_size=1, max_size=4)
    first, second = _Process(stack, stack.ledger), _Process(stack, other)
    try:
        first.start(monkeypatch)
        await until(lambda: first.record() is True, "the first process holds the stream")
        second.start(monkeypatch)
        await until(lambda: second.record() is False, "the second sees it held elsewhere")
        yield first, second
    finally:
        for process in (first, second):
            if process.task is not None:
                await process.stop()
        await other.close()


async def _placed_by(
    stack: Stack, ledger: Ledger, signal_id: str, order_id: str, quantity: int = 1
) -> None:
    """Place a row as a dispatcher of ``ledger``'s process does (claim, write-ahead, answer)."""
    await stack.insert(signal_id, account_name=ACCOUNT, quantity=quantity)
    [row] = await ledger.claim_next(f"w-{signal_id}", limit=1)
    assert row.signal_id == signal_id
    await ledger.transition(
        signal_id, S.SUBMITTED, expected=S.PROCESSING, owner=f"w-{signal_id}",
        client_order_id=f"tb-{signal_id}", detail={"plan": "order", "quantity": quantity},
    )  # fmt: skip
    await ledger.transition(
        signal_id, S.WORKING, expected=S.SUBMITTED, owner=f"w-{signal_id}", event="accepted",
        tradovate_order_id=order_id,
    )  # fmt: skip


def _filled(signal_id: str, order_id: str, n: int = 1) -> BrokerOrderEvent:
    fill = OrderFilled(1, Decimal(21000), datetime.now(UTC), f"{order_id}-f{n}")
    return BrokerOrderEvent(
        AccountName(ACCOUNT), BrokerOrderId(order_id), ClientOrderId(f"tb-{signal_id}"), fill
    )


def _cancelled(order_id: str, signal_id: str | None) -> BrokerOrderEvent:
    cid = None if signal_id is None else ClientOrderId(f"tb-{signal_id}")
    cancel = OrderCancelled(datetime.now(UTC))
    return BrokerOrderEvent(AccountName(ACCOUNT), BrokerOrderId(order_id), cid, cancel)


async def _cancelled_after(stack: Stack, signal_id: str, fills: int) -> None:
    """Wait for the row's cancel; check that its ``fills`` fills were applied before it."""
    row = await stack.wait(signal_id, "cancelled")
    assert row.filled_qty == fills
    events = [e.event for e in await stack.ledger.history(signal_id)]
    assert events[-fills - 1 :] == ["fill"] * fills + ["cancelled"]


async def _placed_by_one_gone(stack: Stack, signal_id: str, order_id: str, quantity: int) -> None:
    """Place a row as a process since gone would have (no live tracker remembers it)."""
    gone = await Ledger.connect(stack.ledger._url, min_size=1, max_size=1)
    try:
        await _placed_by(stack, gone, signal_id, order_id, quantity)
    finally:
        await gone.close()


async def test_each_event_is_applied_by_its_placer_and_read_only_by_the_tracker_of_record(
    stack: Stack, processes: tuple[_Process, _Process]
) -> None:
    holder, other = processes
    await _placed_by(stack, holder.ledger, "mine", "9101")
    await _placed_by(stack, other.ledger, "theirs", "9102")

    # Every process following the stream gets every event.
    for event in (_filled("mine", "9101"), _filled("theirs", "9102")):
        holder.stream.queue.put_nowait(event)
        other.stream.queue.put_nowait(event)
    await stack.wait("mine", "filled")
    await stack.wait("theirs", "filled")
    # The holder reads the other's row after event_retry_s (finding it filled already).
    await until(lambda: holder.reads == ["9102"], "the holder's late read of 9102")

    assert other.reads == []  # its own fill needed no read; the holder's was left to it
    assert [e.event for e in await stack.ledger.history("mine")].count("fill") == 1
    assert [e.event for e in await stack.ledger.history("theirs")].count("fill") == 1


async def test_the_tracker_of_record_applies_what_no_live_placer_did(
    stack: Stack, processes: tuple[_Process, _Process]
) -> None:
    # Placed by a process since gone (no tracker remembers it): the other process leaves its
    # event; the tracker of record applies it, event_retry_s later.
    holder, other = processes
    gone = await Ledger.connect(stack.ledger._url, min_size=1, max_size=1)
    try:
        await _placed_by(stack, gone, "gone", "9103")
    finally:
        await gone.close()
    event = _filled("gone", "9103")
    holder.stream.queue.put_nowait(event)
    other.stream.queue.put_nowait(event)

    await stack.wait("gone", "filled")
    assert other.reads == []
    assert holder.reads == ["9103"]


async def test_a_process_taking_over_applies_the_events_it_left_to_the_one_before(
    stack: Stack, processes: tuple[_Process, _Process]
) -> None:
    holder, other = processes
    await _placed_by(stack, holder.ledger, "orphan", "9104")
    # The holder dies before its stream delivers the fill; the other process got it and
    # left it to the holder.
    other.stream.queue.put_nowait(_filled("orphan", "9104"))
    await until(lambda: len(other.tracker._shares[0].left) == 1, "the event left")
    assert (await stack.wait("orphan", "working")).filled_qty in (None, 0)

    await holder.stop()
    await until(lambda: other.record() is True, "the other process takes over")
    row = await stack.wait("orphan", "filled")

    assert row.filled_qty == 1
    assert other.reads == ["9104"]


async def test_an_acceptance_without_our_id_of_anothers_order_is_not_read_again(
    stack: Stack, processes: tuple[_Process, _Process]
) -> None:
    # It could only match the row by the broker's id, which the placer's answer wrote with
    # the row placed: it would change nothing (reconcile adopts an order whose placer died).
    holder, other = processes
    await _placed_by(stack, other.ledger, "quiet", "9106")
    accepted = OrderAccepted(BrokerOrderId("9106"), datetime.now(UTC))
    holder.stream.queue.put_nowait(
        BrokerOrderEvent(AccountName(ACCOUNT), BrokerOrderId("9106"), None, accepted)
    )
    holder.stream.queue.put_nowait(_filled("quiet", "9106"))

    await until(lambda: bool(holder.reads), "the holder's late read of the fill")
    await stack.wait("quiet", "filled")
    assert holder.reads == ["9106"]  # the fill's; the acceptance was neither put off nor read


async def test_an_event_without_our_id_during_a_send_on_its_account_is_the_senders(
    stack: Stack, processes: tuple[_Process, _Process]
) -> None:
    # The fill overtakes the answer to the submit: the sender cannot tell it is its own yet,
    # but it sends on that account, so it applies it (after the answer is written).
    holder, other = processes
    fill = OrderFilled(1, Decimal(21000), datetime.now(UTC), "9107-f")
    with other.ledger.sending("tb-overtaken", ACCOUNT):
        other.stream.queue.put_nowait(
            BrokerOrderEvent(AccountName(ACCOUNT), BrokerOrderId("9107"), None, fill)
        )
        await _placed_by(stack, other.ledger, "overtaken", "9107")

    row = await stack.wait("overtaken", "filled")
    assert row.filled_qty == 1
    assert holder.reads == []  # the holder never got it: only the sender could apply it


async def test_a_cancel_never_overtakes_the_fills_the_tracker_of_record_put_off(
    stack: Stack, processes: tuple[_Process, _Process]
) -> None:
    # An order no live placer remembers: the holder puts its fills off. A cancel without our
    # id comes while the holder sends on that account: its own, it may be, so it was applied
    # at once, before the fills, which then found the row finished (both lost). The same
    # when the holder learns the order between its events (its own move of the first fill).
    holder, _other = processes
    await _placed_by_one_gone(stack, "overtaken", "9108", quantity=3)
    holder.stream.queue.put_nowait(_filled("overtaken", "9108", 1))
    holder.stream.queue.put_nowait(_filled("overtaken", "9108", 2))
    await until(lambda: len(holder.tracker._later) == 2, "the fills put off")
    with holder.ledger.sending("tb-another", ACCOUNT):
        holder.stream.queue.put_nowait(_cancelled("9108", None))
        await until(holder.stream.queue.empty, "the cancel taken from the stream")

    await _cancelled_after(stack, "overtaken", fills=2)


async def test_a_cancel_while_the_lock_is_retaken_waits_for_the_fill_put_off_before(
    stack: Stack, processes: tuple[_Process, _Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The holder's lock connection is lost: until it knows again who holds the stream it
    # applies every event at once, but not before the events of the same order it put off.
    holder, _other = processes
    await _placed_by_one_gone(stack, "retaken", "9109", quantity=2)
    reconnect = asyncio.Event()
    real_connect = sessions.connect

    async def held_back_connect(*args: Any, **kwargs: Any) -> Any:
        await reconnect.wait()
        return await real_connect(*args, **kwargs)

    try:
        holder.stream.queue.put_nowait(_filled("retaken", "9109", 1))  # put off
        await until(lambda: bool(holder.tracker._later), "the fill put off")
        monkeypatch.setattr(sessions, "connect", held_back_connect)
        await stack.ledger.pool.execute(
            "select pg_terminate_backend(pid) from pg_locks "
            "where locktype = 'advisory' and granted and classid = $1",
            TRACKING_LOCK_NAMESPACE,
        )
        await until(lambda: holder.record() is None, "the lock's state unknown")
        holder.stream.queue.put_nowait(_cancelled("9109", "retaken"))

        await _cancelled_after(stack, "retaken", fills=1)
    finally:
        reconnect.set()


async def test_an_event_applied_at_once_brings_its_orders_events_left_before_it(
    stack: Stack, processes: tuple[_Process, _Process]
) -> None:
    # The other process left a fill to the tracker of record (not its order, as far as it
    # knew); then a cancel without our id comes while it sends on that account: its own, it
    # may be. Applied at once alone, it overtook the fill the holder applies later (lost).
    holder, other = processes
    await _placed_by_one_gone(stack, "left", "9110", quantity=2)
    other.stream.queue.put_nowait(_filled("left", "9110", 1))
    await until(lambda: len(other.tracker._shares[0].left) == 1, "the fill left")
    with other.ledger.sending("tb-another", ACCOUNT):
        other.stream.queue.put_nowait(_cancelled("9110", None))
        await until(lambda: not other.tracker._shares[0].left, "the fill taken back")

    await _cancelled_after(stack, "left", fills=1)
    assert holder.reads == []  # the holder never got these events in this test


async def test_a_cancel_waits_for_its_orders_fill_that_found_no_row_yet(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fill without our id came before the answer to the submit was written: it found no
    # row and is tried again event_retry_s later. The answer written, the cancel came and
    # was applied at once; the fill's second try found the row finished (lost).
    never = asyncio.Event()

    async def no_lock(*args: Any, **kwargs: Any) -> Any:
        await never.wait()  # who holds the stream stays unknown: every event at once

    monkeypatch.setattr(sessions, "connect", no_lock)
    alone = _Process(stack, stack.ledger)
    alone.start(monkeypatch)
    gone = await Ledger.connect(stack.ledger._url, min_size=1, max_size=1)
    try:
        await stack.insert("unanswered", account_name=ACCOUNT, quantity=2)
        [_row] = await gone.claim_next("w-unanswered", limit=1)
        await gone.transition(
            "unanswered", S.SUBMITTED, expected=S.PROCESSING, owner="w-unanswered",
            client_order_id="tb-unanswered", detail={"plan": "order", "quantity": 2},
        )  # fmt: skip
        fill = OrderFilled(1, Decimal(21000), datetime.now(UTC), "9111-f1")
        alone.stream.queue.put_nowait(
            BrokerOrderEvent(AccountName(ACCOUNT), BrokerOrderId("9111"), None, fill)
        )
        await until(lambda: bool(alone.tracker._retries), "the fill to be tried again")
        await gone.transition(
            "unanswered", S.WORKING, expected=S.SUBMITTED, owner="w-unanswered",
            event="accepted", tradovate_order_id="9111",
        )  # fmt: skip
        alone.stream.queue.put_nowait(_cancelled("9111", None))

        await _cancelled_after(stack, "unanswered", fills=1)
    finally:
        await gone.close()
        await alone.stop()


@pytest.mark.parametrize("seed", [1, 8, 9, 14])  # 8, 9, 14 lost fills before 5d96a17
async def test_interleaved_orders_end_with_every_fill_whoever_applies_them(
    stack: Stack, processes: tuple[_Process, _Process], seed: int
) -> None:
    # Orders no live process placed (so every event is put off or left), their events
    # interleaved at random, some without our id and some of those during a send of the
    # other process on the account (its own, it may be: applied at once there). Each order's
    # fills, then maybe its cancel, must end recorded in full, whoever applied what.
    holder, other = processes
    rng = random.Random(seed)
    plans: dict[str, tuple[str, int, int, bool]] = {}  # signal -> order, qty, fills, cancel
    for n in range(6):
        signal_id, order_id = f"mix{seed}-{n}", f"97{seed}{n:02d}"
        quantity = rng.randint(1, 3)
        fills = rng.randint(0, quantity)
        plans[signal_id] = (order_id, quantity, fills, fills < quantity and rng.random() < 0.7)
        await _placed_by_one_gone(stack, signal_id, order_id, quantity)
    streams = {
        signal_id: [
            *(_filled(signal_id, order_id, i + 1) for i in range(fills)),
            *([_cancelled(order_id, signal_id)] if cancel else []),
        ]
        for signal_id, (order_id, _qty, fills, cancel) in plans.items()
    }
    feed: list[BrokerOrderEvent] = []
    while any(streams.values()):
        signal_id = rng.choice([s for s, events in streams.items() if events])
        event = streams[signal_id].pop(0)
        if rng.random() < 0.4:  # as the native socket shows another process's order
            event = BrokerOrderEvent(event.account, event.broker_order_id, None, event.event)
        feed.append(event)

    for event in feed:
        during_a_send = event.client_order_id is None and rng.random() < 0.5
        with contextlib.ExitStack() as sending:
            if during_a_send:
                sending.enter_context(other.ledger.sending("tb-another", ACCOUNT))
            holder.stream.queue.put_nowait(event)
            other.stream.queue.put_nowait(event)
            await until(
                lambda: holder.stream.queue.empty() and other.stream.queue.empty(),
                "both processes took the event",
            )

    async def settled() -> list[tuple[str, S, Decimal]]:
        rows = [await stack.ledger.get(signal_id) for signal_id in plans]
        return [(r.signal_id, r.status, r.filled_qty or Decimal(0)) for r in rows if r]

    def expected(signal_id: str) -> tuple[str, S, Decimal]:
        _order, quantity, fills, cancel = plans[signal_id]
        status = (
            S.FILLED if fills == quantity
            else S.CANCELLED if cancel
            else S.PARTIALLY_FILLED if fills
            else S.WORKING
        )  # fmt: skip
        return signal_id, status, Decimal(fills)

    wanted = [expected(signal_id) for signal_id in plans]
    deadline = asyncio.get_running_loop().time() + 20
    while (found := await settled()) != wanted and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert found == wanted


def test_events_left_are_found_by_order_and_the_oldest_go_past_the_limit() -> None:
    # Every event a process applies at once asks what it left of that order: by its count,
    # not by going through up to 10,000 events left of others' orders.
    share = _Share(broker=None)  # type: ignore[arg-type]
    share.leave(_filled("first", "9201"))
    for n in range(_LEFT_KEPT):
        share.leave(_filled("others", "9202", n))
    share.leave(_filled("last", "9203"))

    assert len(share.left) == _LEFT_KEPT
    assert share.take_left("9201") == []  # the oldest, gone past the limit
    assert share.take_left("9204") == []
    assert [str(e.broker_order_id) for e in share.take_left("9203")] == ["9203"]
    assert len(share.left) == _LEFT_KEPT - 1
    assert len(share.hand_over(since=0.0)) == _LEFT_KEPT - 1
    assert (share.left, share.take_left("9202")) == (deque(), [])
