"""The ledger store: inserts, claims, transitions, audit tables and notifications."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from tradebridge.domain.lifecycle import ALLOWED_MOVES, FINAL_STATUSES, SignalStatus, check_move
from tradebridge.errors import IllegalTransition, InvalidInput
from tradebridge.store.ledger import (
    NOTIFY_CHANNEL,
    BrokerCall,
    Ledger,
    lock_account,
    try_lock_account,
)

S = SignalStatus
DOCUMENTED_INSERT = """
insert into trading_signals (signal_id, strategy_name, instrument, side, order_type, quantity,
                             price, stop_loss, take_profit, account_name, metadata)
values ($1, 'orb', 'MNQZ6', 'buy', 'market', 1, null, 0, 0, $2, '{"k": "v"}')
"""


async def _insert(ledger: Ledger, signal_id: str, account: str = "ACC1") -> None:
    await ledger.insert_signal(
        signal_id=signal_id, instrument="MNQZ6", side="buy", quantity=1, account_name=account
    )


async def _walk(ledger: Ledger, signal_id: str, path: list[SignalStatus]) -> None:
    for status in path:
        await ledger.transition(signal_id, status)


# --- inserts ---------------------------------------------------------------------------------


async def test_plain_insert_documented_columns_gets_pending_and_notification(
    ledger: Ledger, ledger_db: str
) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(ledger_db)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: received.put_nowait(args[3]))
    strategy = await asyncpg.connect(ledger_db)
    try:
        await strategy.execute(DOCUMENTED_INSERT, "sig-1", "ACC1")
        payload = await asyncio.wait_for(received.get(), 5)
    finally:
        await strategy.close()
        await listener.close()
    row = await ledger.get("sig-1")
    assert payload == "sig-1"
    assert row is not None
    assert row.status is S.PENDING
    assert row.metadata == {"k": "v"}
    assert row.placement_attempts == 0
    assert row.created_at is not None
    assert row.created_at.tzinfo is not None


async def test_insert_signal_existing_id_raises_invalid_input(ledger: Ledger) -> None:
    await _insert(ledger, "dup")
    with pytest.raises(InvalidInput, match="already exists"):
        await _insert(ledger, "dup")


@pytest.mark.parametrize(("side", "order_type"), [("LONG", "market"), ("buy", "trailing")])
async def test_insert_signal_unknown_side_or_type_is_stored_pending(
    ledger: Ledger, side: str, order_type: str
) -> None:
    # The dispatcher denies such a row with a precise error_message; an INSERT never fails.
    row = await ledger.insert_signal(
        signal_id="x",
        instrument="MNQZ6",
        side=side,
        order_type=order_type,
        quantity=1,
        account_name="A",
    )
    assert (row.status, row.side, row.order_type) == ("pending", side, order_type)


async def test_row_prices_are_decimal_and_times_aware(ledger: Ledger) -> None:
    row = await ledger.insert_signal(
        signal_id="p",
        instrument="MNQZ6",
        side="sell",
        quantity=2,
        account_name="A",
        order_type="limit",
        price=Decimal("21000.25"),
        metadata={"when": "now"},
    )
    assert row.price == Decimal("21000.25")
    assert row.quantity == Decimal(2)
    assert row.updated_at is not None
    assert row.updated_at.utcoffset() == timedelta(0)
    assert row.source == "db"


# --- claims ----------------------------------------------------------------------------------


async def test_claim_two_concurrent_workers_never_share_a_row(ledger: Ledger) -> None:
    ids = [f"s{i:03d}" for i in range(240)]
    for i, signal_id in enumerate(ids):
        await _insert(ledger, signal_id, account=f"ACC{i % 12}")
    seen: dict[str, list[str]] = {}

    async def worker(name: str) -> None:
        idle = 0
        while idle < 3:
            rows = await ledger.claim_next(name, limit=4)
            if not rows:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for row in rows:
                seen.setdefault(row.signal_id, []).append(name)
                # Final at once, so the account's next row becomes claimable.
                await ledger.transition(row.signal_id, S.DENIED, owner=name)

    await asyncio.gather(worker("w1"), worker("w2"))
    assert sorted(seen) == ids
    assert all(len(workers) == 1 for workers in seen.values())
    assert {w for workers in seen.values() for w in workers} == {"w1", "w2"}


async def test_claim_one_row_per_account_in_insertion_order(ledger: Ledger) -> None:
    for signal_id, account in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A"), ("b2", "B")]:
        await _insert(ledger, signal_id, account)
    first = await ledger.claim_next("w", limit=10)
    assert [r.signal_id for r in first] == ["a1", "b1"]
    assert await ledger.claim_next("w", limit=10) == []  # both accounts have a row in flight
    await _walk(ledger, "a1", [S.SUBMITTED, S.WORKING])  # accepted: A may go on
    assert [r.signal_id for r in await ledger.claim_next("w", limit=10)] == ["a2"]
    await _walk(ledger, "b1", [S.SUBMITTED, S.UNKNOWN])  # a plain order passes unknown rows
    await ledger.transition("a2", S.DENIED)
    assert [r.signal_id for r in await ledger.claim_next("w", limit=10)] == ["a3", "b2"]


async def _insert_intent(ledger: Ledger, signal_id: str, intent: str) -> None:
    await ledger.pool.execute(
        "insert into trading_signals (signal_id, instrument, account_name, intent) "
        "values ($1, 'MNQZ6', 'ACC1', $2)",
        signal_id,
        intent,
    )


@pytest.mark.parametrize("intent", ["exit", "reverse", "target", "cancel", "flatten"])
async def test_claim_unknown_row_holds_back_intents_that_depend_on_the_position(
    ledger: Ledger, intent: str
) -> None:
    await _insert(ledger, "u")
    await ledger.claim_next("w")
    await _walk(ledger, "u", [S.SUBMITTED, S.UNKNOWN])
    await _insert_intent(ledger, "x", intent)
    await _insert(ledger, "after")  # behind the held row: waits too (insertion order)

    assert await ledger.claim_next("w", limit=10, per_account=5) == []
    assert await ledger.held_back("ACC1", unknown_bound=timedelta(seconds=60)) == ["u"]


async def test_claim_unknown_row_past_the_bound_holds_nothing_back(ledger: Ledger) -> None:
    await _insert(ledger, "u")
    await ledger.claim_next("w")
    await _walk(ledger, "u", [S.SUBMITTED, S.UNKNOWN])
    await ledger.pool.execute(
        "update trading_signals set last_attempt_at = now() - interval '2 minutes' "
        "where signal_id = 'u'"
    )
    await _insert_intent(ledger, "x", "exit")

    claimed = await ledger.claim_next("w", unknown_bound=timedelta(seconds=60))

    assert [r.signal_id for r in claimed] == ["x"]
    unresolved = await ledger.unresolved(unknown_bound=timedelta(seconds=60))
    assert [r.signal_id for r in unresolved] == ["u"]


async def test_claim_unknown_blocks_all_holds_back_plain_orders_too(ledger: Ledger) -> None:
    await _insert(ledger, "u")
    await ledger.claim_next("w")
    await _walk(ledger, "u", [S.SUBMITTED, S.UNKNOWN])
    await _insert(ledger, "plain")

    assert await ledger.claim_next("w", unknown_blocks_all=True) == []
    assert [r.signal_id for r in await ledger.claim_next("w")] == ["plain"]


async def test_claim_concurrent_claimers_one_account_get_only_its_head(ledger: Ledger) -> None:
    for i in range(5):
        await _insert(ledger, f"a{i}", "A")
    results = await asyncio.gather(*(ledger.claim_next(f"w{i}", limit=3) for i in range(6)))
    claimed = [r.signal_id for rows in results for r in rows]
    assert claimed == ["a0"]


async def test_claim_row_without_account_is_still_claimed(ledger: Ledger, ledger_db: str) -> None:
    await _insert(ledger, "busy", "A")
    await ledger.claim_next("w")
    conn = await asyncpg.connect(ledger_db)
    try:
        await conn.execute("insert into trading_signals (signal_id, side) values ('orphan', 'buy')")
    finally:
        await conn.close()
    # A poison row (no account) is claimed, so that it can be denied, not left pending.
    assert [r.signal_id for r in await ledger.claim_next("w")] == ["orphan"]


async def test_claim_writes_claimed_event_and_stamps(ledger: Ledger) -> None:
    await _insert(ledger, "c1")
    [row] = await ledger.claim_next("worker-7")
    assert row.status is S.PROCESSING
    assert row.claimed_by == "worker-7"
    assert row.ts_claimed is not None
    events = await ledger.history("c1")
    assert [(e.event, e.detail) for e in events] == [("claimed", {"worker": "worker-7"})]


async def test_claim_zero_limit_raises(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="limit"):
        await ledger.claim_next("w", limit=0)


# --- transitions -----------------------------------------------------------------------------


async def test_transition_writes_row_history_and_broker_call(ledger: Ledger) -> None:
    await _insert(ledger, "t1")
    await ledger.claim_next("w")
    call = BrokerCall(
        dialect="native",
        method="POST",
        path="/order/placeorder",
        status=200,
        latency_ms=12.5,
        request_body={"clOrdId": "tb-t1", "price": Decimal("1.25")},
        response_body={"orderId": 77},
    )
    row = await ledger.transition(
        "t1",
        S.SUBMITTED,
        expected=S.PROCESSING,
        owner="w",
        detail={"client_order_id": "tb-t1"},
        broker_call=call,
        client_order_id="tb-t1",
    )
    row = await ledger.transition("t1", S.WORKING, tradovate_order_id="77", event="accepted")
    row = await ledger.transition(
        "t1", S.FILLED, filled_qty=1, avg_fill_price=Decimal("21000.5"), event="filled"
    )
    assert row.status is S.FILLED
    assert row.tradovate_order_id == "77"
    assert row.client_order_id == "tb-t1"
    assert row.avg_fill_price == Decimal("21000.5")
    assert row.filled_qty == Decimal(1)
    assert row.placement_attempts == 1
    assert row.ts_submitted is not None
    assert row.ts_accepted is not None
    assert row.ts_final is not None
    assert row.ts_submitted <= row.ts_accepted <= row.ts_final
    events = await ledger.history("t1")
    assert [e.event for e in events] == ["claimed", "submitted", "accepted", "filled"]
    assert events[1].detail == {"from": "processing", "to": "submitted", "client_order_id": "tb-t1"}
    [recorded] = await ledger.broker_calls("t1")
    assert recorded.call.request_body == {"clOrdId": "tb-t1", "price": "1.25"}
    assert recorded.call.response_body == {"orderId": 77}
    assert recorded.call.latency_ms == 12.5


async def test_transition_failure_mid_transaction_leaves_nothing_half_written(
    ledger: Ledger, ledger_db: str
) -> None:
    await _insert(ledger, "t2")
    await ledger.claim_next("w")
    before = await ledger.get("t2")
    conn = await asyncpg.connect(ledger_db)
    try:
        # The third write of the transition (the audit row) fails inside the database.
        await conn.execute(
            "create function refuse() returns trigger language plpgsql as "
            "$$ begin raise exception 'audit store broken'; end $$; "
            "create trigger refuse before insert on broker_calls "
            "for each row execute function refuse()"
        )
        with pytest.raises(asyncpg.RaiseError, match="audit store broken"):
            await ledger.transition(
                "t2",
                S.SUBMITTED,
                broker_call=BrokerCall(dialect="native", method="POST", path="/order/placeorder"),
                client_order_id="tb-t2",
            )
        calls = await conn.fetchval("select count(*) from broker_calls")
    finally:
        await conn.close()
    assert await ledger.get("t2") == before
    assert [e.event for e in await ledger.history("t2")] == ["claimed"]
    assert calls == 0


async def test_transition_unknown_signal_raises_invalid_input(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        await ledger.transition("nope", S.PROCESSING)


async def test_transition_by_other_worker_than_claimer_is_refused(ledger: Ledger) -> None:
    await _insert(ledger, "o1")
    await ledger.claim_next("w1")
    with pytest.raises(IllegalTransition, match="claimed by 'w1'"):
        await ledger.transition("o1", S.SUBMITTED, owner="w2")
    assert (await ledger.get("o1")) is not None


async def test_transition_expected_status_differs_is_refused(ledger: Ledger) -> None:
    await _insert(ledger, "e1")
    with pytest.raises(IllegalTransition, match="status is pending, expected processing"):
        await ledger.transition("e1", S.SUBMITTED, expected=S.PROCESSING)


async def test_transition_resubmit_after_unknown_counts_attempts(ledger: Ledger) -> None:
    await _insert(ledger, "r1")
    await ledger.claim_next("w")
    await _walk(ledger, "r1", [S.SUBMITTED, S.UNKNOWN, S.SUBMITTED, S.REJECTED])
    row = await ledger.get("r1")
    assert row is not None
    assert row.placement_attempts == 2
    assert row.is_final


# Moves refused: backwards, out of a final status, skipping the claim.
REFUSED = [
    (S.PENDING, S.SUBMITTED),
    (S.PENDING, S.FILLED),
    (S.SUBMITTED, S.PROCESSING),
    (S.SUBMITTED, S.PENDING),
    (S.WORKING, S.SUBMITTED),
    (S.WORKING, S.UNKNOWN),
    (S.PARTIALLY_FILLED, S.WORKING),
    (S.FILLED, S.WORKING),
    (S.FILLED, S.PENDING),
    (S.DENIED, S.PENDING),
    (S.REJECTED, S.FILLED),
    (S.CANCELLED, S.CANCELLED),
]
# How to reach each status from pending.
PATHS: dict[SignalStatus, list[SignalStatus]] = {
    S.PENDING: [],
    S.SUBMITTED: [S.PROCESSING, S.SUBMITTED],
    S.WORKING: [S.PROCESSING, S.SUBMITTED, S.WORKING],
    S.PARTIALLY_FILLED: [S.PROCESSING, S.SUBMITTED, S.PARTIALLY_FILLED],
    S.FILLED: [S.PROCESSING, S.SUBMITTED, S.FILLED],
    S.DENIED: [S.PROCESSING, S.DENIED],
    S.REJECTED: [S.PROCESSING, S.SUBMITTED, S.REJECTED],
    S.CANCELLED: [S.CANCELLED],
}


@pytest.mark.parametrize(("old", "new"), REFUSED)
def test_check_move_backward_or_out_of_final_raises(old: SignalStatus, new: SignalStatus) -> None:
    with pytest.raises(IllegalTransition):
        check_move("x", old, new)


@pytest.mark.parametrize(("old", "new"), REFUSED)
async def test_transition_refused_move_writes_nothing(
    ledger: Ledger, old: SignalStatus, new: SignalStatus
) -> None:
    await _insert(ledger, "m")
    await _walk(ledger, "m", PATHS[old])
    events = await ledger.history("m")
    with pytest.raises(IllegalTransition):
        await ledger.transition("m", new)
    row = await ledger.get("m")
    assert row is not None
    assert row.status is old
    assert await ledger.history("m") == events


@pytest.mark.parametrize(("old", "new"), [m for m in REFUSED if m[0] is not m[1]])
async def test_trigger_refuses_raw_sql_move(
    ledger: Ledger, ledger_db: str, old: SignalStatus, new: SignalStatus
) -> None:
    await _insert(ledger, "m")
    await _walk(ledger, "m", PATHS[old])
    conn = await asyncpg.connect(ledger_db)
    try:
        with pytest.raises(asyncpg.PostgresError, match=f"illegal status move {old} -> {new}") as e:
            await conn.execute(
                "update trading_signals set status = $1 where signal_id = 'm'", new.value
            )
        assert e.value.sqlstate == "TB409"
    finally:
        await conn.close()


async def test_trigger_move_table_matches_python_table(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as conn:
        rows = await conn.fetch(
            "select o.s as old, n.s as new, tradebridge_status_move_allowed(o.s, n.s, false) ok "
            "from unnest($1::text[]) o(s), unnest($1::text[]) n(s)",
            [s.value for s in SignalStatus],
        )
    sql_moves = {(S(r["old"]), S(r["new"])) for r in rows if r["ok"]}
    python_moves = {(old, new) for old, news in ALLOWED_MOVES.items() for new in news}
    assert sql_moves == python_moves
    assert all(not ALLOWED_MOVES[final] for final in FINAL_STATUSES)


async def test_trigger_processing_to_pending_refused_once_submitted(
    ledger: Ledger, ledger_db: str
) -> None:
    await _insert(ledger, "q")
    await ledger.claim_next("w")
    conn = await asyncpg.connect(ledger_db)
    try:
        # Forged: a row in processing that claims it was already sent.
        await conn.execute("update trading_signals set ts_submitted = now() where signal_id='q'")
        with pytest.raises(asyncpg.PostgresError, match="processing -> pending"):
            await conn.execute("update trading_signals set status='pending' where signal_id='q'")
    finally:
        await conn.close()


async def test_updated_at_maintained_by_trigger(ledger: Ledger, ledger_db: str) -> None:
    row = await ledger.insert_signal(
        signal_id="u", instrument="MNQZ6", side="buy", quantity=1, account_name="A"
    )
    conn = await asyncpg.connect(ledger_db)
    try:
        await conn.execute(
            "update trading_signals set error_message = 'note', "
            "updated_at = '2000-01-01' where signal_id = 'u'"
        )
    finally:
        await conn.close()
    after = await ledger.get("u")
    assert after is not None
    assert row.updated_at is not None
    assert after.updated_at is not None
    assert after.updated_at.year > 2000


# --- audit tables ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "update order_history set event = 'forged'",
        "delete from order_history",
        "truncate order_history",
    ],
)
async def test_order_history_is_append_only(ledger: Ledger, ledger_db: str, statement: str) -> None:
    await ledger.add_event("h", "note", {"n": 1})
    conn = await asyncpg.connect(ledger_db)
    try:
        with pytest.raises(asyncpg.PostgresError, match="order_history is append-only") as e:
            await conn.execute(statement)
        assert e.value.sqlstate == "TB405"
    finally:
        await conn.close()
    assert [(e.event, e.detail) for e in await ledger.history("h")] == [("note", {"n": 1})]


async def test_record_broker_call_without_signal(ledger: Ledger, ledger_db: str) -> None:
    await ledger.record_broker_call(
        BrokerCall(dialect="tvbridge", method="GET", path="/accounts", status=500, error="boom")
    )
    conn = await asyncpg.connect(ledger_db)
    try:
        row = await conn.fetchrow("select * from broker_calls")
    finally:
        await conn.close()
    assert row["signal_id"] is None
    assert (row["status"], row["error"]) == (500, "boom")


# --- recovery --------------------------------------------------------------------------------


async def test_requeue_stale_unsent_back_to_pending_sent_to_lookup(ledger: Ledger) -> None:
    for signal_id, account in [("p", "A"), ("s", "B"), ("u", "C"), ("fresh", "D")]:
        await _insert(ledger, signal_id, account)
    await ledger.claim_next("dead", limit=3)
    await ledger.transition("s", S.SUBMITTED)
    await _walk(ledger, "u", [S.SUBMITTED, S.UNKNOWN])
    await ledger.claim_next("alive")
    result = await ledger.requeue_stale(older_than=timedelta(hours=1), claimed_by="dead")
    assert result.requeued == ("p",)
    assert result.marked_unknown == ("s",)
    assert set(result.awaiting_lookup) == {"s", "u"}
    p, s, fresh = await ledger.get("p"), await ledger.get("s"), await ledger.get("fresh")
    assert p is not None
    assert (p.status, p.claimed_by) == (S.PENDING, None)
    assert s is not None
    assert s.status is S.UNKNOWN
    assert fresh is not None
    assert fresh.status is S.PROCESSING  # a live worker's claim is left alone
    assert [e.event for e in await ledger.history("p")][-1] == "requeued"


async def test_requeue_stale_by_age(ledger: Ledger) -> None:
    await _insert(ledger, "old")
    await ledger.claim_next("w")
    none = await ledger.requeue_stale(older_than=timedelta(hours=1))
    assert none.requeued == ()
    await asyncio.sleep(0.05)
    aged = await ledger.requeue_stale(older_than=timedelta(milliseconds=10))
    assert aged.requeued == ("old",)
    [again] = await ledger.claim_next("w2")
    assert again.signal_id == "old"


# --- locks -----------------------------------------------------------------------------------


async def test_account_lock_held_until_transaction_ends(ledger: Ledger) -> None:
    async with (
        ledger.account_transaction("ACC1"),
        ledger.pool.acquire() as other,
        other.transaction(),
    ):
        assert await try_lock_account(other, "ACC1") is False
        assert await try_lock_account(other, "ACC2") is True
    async with ledger.pool.acquire() as other, other.transaction():
        await lock_account(other, "ACC1")
        assert await try_lock_account(other, "ACC1") is True


# --- notifications ---------------------------------------------------------------------------


async def test_listen_reconnects_and_listens_again(ledger: Ledger, ledger_db: str) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    connects = itertools.count(1)
    connected = asyncio.Event()
    count = 0

    async def on_connect() -> None:
        nonlocal count
        count = next(connects)
        connected.set()

    task = asyncio.create_task(
        ledger.listen(received.put_nowait, on_connect=on_connect, check_every_s=0.2)
    )
    try:
        await asyncio.wait_for(connected.wait(), 5)
        await _insert(ledger, "n1")
        assert await asyncio.wait_for(received.get(), 5) == "n1"
        connected.clear()
        admin = await asyncpg.connect(ledger_db)
        try:
            killed = await admin.fetchval(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                "where application_name = 'tradebridge-listener'"
            )
        finally:
            await admin.close()
        assert killed == 1
        await asyncio.wait_for(connected.wait(), 10)
        await _insert(ledger, "n2")
        assert await asyncio.wait_for(received.get(), 5) == "n2"
        assert count == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_requeue_notifies_listeners(ledger: Ledger, ledger_db: str) -> None:
    await _insert(ledger, "rq")
    await ledger.claim_next("dead")
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(ledger_db)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: received.put_nowait(args[3]))
    try:
        await ledger.requeue_stale(older_than=timedelta(hours=1), claimed_by="dead")
        assert await asyncio.wait_for(received.get(), 5) == "rq"
    finally:
        await listener.close()


async def test_ledger_row_legacy_columns_normalised(empty_db: str) -> None:
    from tradebridge.store.migrate import migrate

    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(
            "create table trading_signals (signal_id text unique, price double precision, "
            "quantity integer, tradovate_order_id bigint, created_at timestamp default now()); "
            "insert into trading_signals values ('L', 0.1, 3, 123, '2026-01-02 03:04:05')"
        )
    finally:
        await conn.close()
    await migrate(empty_db)
    async with await Ledger.connect(empty_db) as ledger:
        row = await ledger.get("L")
    assert row is not None
    assert row.price == Decimal("0.1")
    assert row.quantity == Decimal(3)
    assert row.tradovate_order_id == "123"
    assert row.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_transition_python_check_bypassed_trigger_still_refuses(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tradebridge.store.ledger.moves as moves_module

    await _insert(ledger, "g")
    await _walk(ledger, "g", PATHS[S.FILLED])
    # Force the rare branch: a Python table that wrongly allows the move.
    monkeypatch.setattr(moves_module, "check_move", lambda *_: None)
    with pytest.raises(IllegalTransition, match="illegal status move filled -> working"):
        await ledger.transition("g", S.WORKING)
    assert [e.event for e in await ledger.history("g")][-1] == "filled"
