"""The dispatcher's fast paths in the ledger: batch claims, one-statement moves, hand back,
and the connection reset skipped only after stateless use."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from _support.database import set_status_behind_the_trigger
from tradebridge.domain.lifecycle import SignalStatus as S
from tradebridge.errors import IllegalTransition, InvalidInput
from tradebridge.store.ledger import BrokerCall, Ledger, claims
from tradebridge.store.ledger.moves import lazy_move


async def _insert(ledger: Ledger, signal_id: str, account: str = "A") -> None:
    await ledger.insert_signal(
        signal_id=signal_id, instrument="MNQZ6", side="buy", quantity=1, account_name=account
    )


async def test_claim_per_account_takes_each_accounts_oldest_rows_in_order(ledger: Ledger) -> None:
    for signal_id, account in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A"), ("b2", "B")]:
        await _insert(ledger, signal_id, account)

    rows = await ledger.claim_next("w", limit=10, per_account=2)

    assert [(r.signal_id, r.status) for r in rows] == [
        ("a1", S.PROCESSING),
        ("b1", S.PROCESSING),
        ("a2", S.PROCESSING),
        ("b2", S.PROCESSING),
    ]
    assert {r.claimed_by for r in rows} == {"w"}
    assert await ledger.claim_next("w", limit=10, per_account=2) == []  # both accounts busy
    assert [e.event for e in await ledger.history("a2")] == ["claimed"]


async def test_claim_limit_counts_accounts_not_rows(ledger: Ledger) -> None:
    for i in range(3):
        await _insert(ledger, f"a{i}", "A")
        await _insert(ledger, f"b{i}", "B")

    rows = await ledger.claim_next("w", limit=1, per_account=5)

    assert [r.signal_id for r in rows] == ["a0", "a1", "a2"]


async def test_claim_batches_concurrent_claimers_never_share_an_account(ledger: Ledger) -> None:
    accounts = [f"ACC{i}" for i in range(6)]
    for n in range(8):
        for account in accounts:
            await _insert(ledger, f"{account}-{n}", account)

    results = await asyncio.gather(
        *(ledger.claim_next(f"w{i}", limit=4, per_account=3) for i in range(5))
    )

    owner: dict[str, str] = {}
    for i, rows in enumerate(results):
        for row in rows:
            assert row.account_name is not None
            assert owner.setdefault(row.account_name, f"w{i}") == f"w{i}"
    for account in owner:
        got = sorted(r.signal_id for rows in results for r in rows if r.account_name == account)
        assert got == [f"{account}-{n}" for n in range(3)]  # the oldest three, nothing skipped


async def test_claim_per_account_zero_raises(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="per_account"):
        await ledger.claim_next("w", per_account=0)


async def test_hand_back_returns_only_unsent_rows_of_the_claimer(ledger: Ledger) -> None:
    for i in range(3):
        await _insert(ledger, f"a{i}")
    await ledger.claim_next("w", per_account=3)
    await ledger.transition("a0", S.SUBMITTED, expected=S.PROCESSING, owner="w")

    back = await ledger.hand_back("other", ["a1"], "not mine")
    assert back == []
    back = await ledger.hand_back("w", ["a0", "a1", "a2"], "worker stopping")

    assert sorted(back) == ["a1", "a2"]
    a0, a1 = await ledger.get("a0"), await ledger.get("a1")
    assert a0 is not None
    assert a0.status is S.SUBMITTED  # may have been sent: never handed back
    assert a1 is not None
    assert a1.status is S.PENDING
    assert a1.claimed_by is None
    [_, requeued] = await ledger.history("a1")
    assert (requeued.event, requeued.detail["reason"]) == ("requeued", "worker stopping")


async def test_fast_move_writes_row_event_and_call_in_one_go(ledger: Ledger) -> None:
    await _insert(ledger, "m1")
    await ledger.claim_next("w")
    call = BrokerCall("native", "POST", "/order/placeorder", 200, 1.5, {"q": Decimal(1)}, {"id": 7})

    row = await ledger.transition(
        "m1", S.SUBMITTED, expected=S.PROCESSING, owner="w", client_order_id="tb-m1"
    )
    row = await ledger.transition(
        "m1", S.WORKING, expected=S.SUBMITTED, owner="w", event="accepted",
        tradovate_order_id="7", detail={"broker_order_id": "7"}, broker_call=call,
    )  # fmt: skip

    assert (row.status, row.tradovate_order_id, row.client_order_id) == (S.WORKING, "7", "tb-m1")
    assert row.placement_attempts == 1
    assert row.ts_submitted is not None
    assert row.ts_accepted is not None
    events = [(e.event, e.detail) for e in await ledger.history("m1")]
    assert events[1:] == [
        ("submitted", {"from": "processing", "to": "submitted"}),
        ("accepted", {"from": "submitted", "to": "working", "broker_order_id": "7"}),
    ]
    [recorded] = await ledger.broker_calls("m1")
    assert recorded.call == BrokerCall(
        "native", "POST", "/order/placeorder", 200, 1.5, {"q": "1"}, {"id": 7}
    )


@pytest.mark.parametrize(
    ("owner", "expected", "error", "match"),
    [
        ("other", S.PROCESSING, IllegalTransition, "claimed by 'w', not by 'other'"),
        ("w", S.PENDING, IllegalTransition, "status is processing, expected pending"),
    ],
)
async def test_fast_move_refused_gives_the_precise_error_and_writes_nothing(
    ledger: Ledger, owner: str, expected: S, error: type[Exception], match: str
) -> None:
    await _insert(ledger, "f1")
    await ledger.claim_next("w")

    target = S.SUBMITTED if expected is S.PROCESSING else S.PROCESSING
    with pytest.raises(error, match=match):
        await ledger.transition("f1", target, expected=expected, owner=owner)

    row = await ledger.get("f1")
    assert row is not None
    assert row.status is S.PROCESSING
    assert [e.event for e in await ledger.history("f1")] == ["claimed"]


async def test_fast_move_of_missing_row_raises_invalid_input(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        await ledger.transition("nope", S.PROCESSING, expected=S.PENDING)


async def test_fast_move_trigger_refusal_is_an_illegal_transition(
    ledger: Ledger, ledger_db: str
) -> None:
    # The database's own guard: a row submitted once may not go back to pending, even when
    # the caller's expectation (processing -> pending) is a legal move in general.
    await _insert(ledger, "g1")
    await ledger.claim_next("w")
    await ledger.transition("g1", S.SUBMITTED, expected=S.PROCESSING)
    await set_status_behind_the_trigger(ledger_db, "g1", "processing")

    with pytest.raises(IllegalTransition, match="illegal status move"):
        await ledger.transition("g1", S.PENDING, expected=S.PROCESSING)


async def test_pool_still_resets_connections_after_stateful_use(ledger: Ledger) -> None:
    # The reset is skipped only after the ledger's own one-statement calls; a session lock
    # taken on a borrowed connection must not outlive its release.
    async with ledger.pool.acquire() as conn:
        assert await conn.fetchval("select pg_try_advisory_lock(42)")
    await _insert(ledger, "r1")
    await ledger.claim_next("w")  # a stateless use in between

    async with ledger.pool.acquire() as a, ledger.pool.acquire() as b:
        held = [await c.fetchval("select count(*) from pg_locks where locktype = 'advisory' "
                                 "and pid = pg_backend_pid()") for c in (a, b)]  # fmt: skip
    assert held == [0, 0]


async def _one_connection_ledger(ledger_db: str) -> tuple[Ledger, list[str]]:
    """Open a ledger on a pool of one connection whose every statement is recorded."""
    ledger = await Ledger.connect(ledger_db, min_size=1, max_size=1)
    sent: list[str] = []
    async with ledger.pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
    sent.clear()  # the raw borrow above was reset on release
    return ledger, sent


def _resets(sent: list[str]) -> list[str]:
    return [q for q in sent if "UNLISTEN" in q or "RESET ALL" in q]


async def test_ledger_calls_release_connections_without_the_reset_query(ledger_db: str) -> None:
    ledger, sent = await _one_connection_ledger(ledger_db)
    try:
        await _insert(ledger, "q1")
        [row] = await ledger.claim_next("w")
        await ledger.transition(row.signal_id, S.SUBMITTED, expected=S.PROCESSING, owner="w")
        await ledger.get("q1")
        await ledger.history("q1")
        async with ledger.transaction() as conn:
            await ledger.lock_row_for_event(conn, None, "no-such-order", account="ACC")
        await ledger.add_event("q1", "note")

        assert len(sent) >= 8
        assert _resets(sent) == []
    finally:
        await ledger.close()


async def test_ledger_call_refused_releases_its_connection_without_the_reset(
    ledger_db: str,
) -> None:
    ledger, sent = await _one_connection_ledger(ledger_db)
    try:
        with pytest.raises(InvalidInput):
            await ledger.transition("missing", S.SUBMITTED)  # read under a lock, then refused
        with pytest.raises(asyncpg.PostgresError):
            await ledger._db.fetch("select 1 / 0")

        assert len(sent) >= 4
        assert _resets(sent) == []
    finally:
        await ledger.close()


async def test_ledger_call_cut_short_still_resets_its_connection(ledger_db: str) -> None:
    ledger, sent = await _one_connection_ledger(ledger_db)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await ledger._db.fetch("select pg_sleep(30)")
        await ledger.get("any")  # waits for the connection's release

        assert len(_resets(sent)) == 1
    finally:
        await ledger.close()


async def test_fast_move_refused_costs_one_more_read_not_a_transaction(ledger_db: str) -> None:
    ledger, sent = await _one_connection_ledger(ledger_db)
    try:
        await _insert(ledger, "q1")
        [row] = await ledger.claim_next("w")
        sent.clear()

        with pytest.raises(IllegalTransition, match="claimed by 'w', not by 'other'"):
            await ledger.transition(row.signal_id, S.SUBMITTED, expected=S.PROCESSING,
                                    owner="other")  # fmt: skip

        assert len(sent) == 2
        assert not any(q.strip().upper().startswith("BEGIN") for q in sent)
    finally:
        await ledger.close()


# --- lazy commits (database.lazy_commits) ------------------------------------------------------
class _Spy:
    """The ledger's stateless pool, noting whether each statement asked for a lazy commit."""

    def __init__(self, ledger: Ledger) -> None:
        self.inner = ledger._db
        self.lazy: list[bool] = []

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        self.lazy.append("'synchronous_commit', 'off', true" in query)
        return await self.inner.fetch(query, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("lazy_commits", [True, False])
async def test_claim_and_moves_after_the_write_ahead_commit_lazily_the_write_ahead_never(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, lazy_commits: bool
) -> None:
    ledger.lazy_commits = lazy_commits
    spy = _Spy(ledger)
    monkeypatch.setattr(ledger, "_db", spy)
    await _insert(ledger, "z1")

    await ledger.claim("w")
    await ledger.transition("z1", S.SUBMITTED, expected=S.PROCESSING, owner="w")
    working = await ledger.transition("z1", S.WORKING, expected=S.SUBMITTED, owner="w")
    await ledger.move_if("z1", S.FILLED, expected=S.WORKING, filled_was=working.filled_qty,
                         event="filled", detail={}, filled_qty=Decimal(1))  # fmt: skip

    # claim, write-ahead, the broker's answer, the fill
    assert spy.lazy == [lazy_commits, False, lazy_commits, lazy_commits]
    row = await ledger.get("z1")
    assert row is not None
    assert row.status is S.FILLED


async def test_lazy_claim_sets_synchronous_commit_for_its_transaction_only(
    ledger: Ledger,
) -> None:
    await _insert(ledger, "z2")
    query = claims._CLAIM_LAZY_SQL

    async with ledger.pool.acquire() as conn:  # reset on release: the SET goes with it
        await conn.execute("set synchronous_commit = on")  # the test server's default is off
        async with conn.transaction():
            rows = await conn.fetch(query, "w", 1, 1, timedelta(seconds=60), False)
            inside = await conn.fetchval("show synchronous_commit")
        after = await conn.fetchval("show synchronous_commit")

    assert [r["signal_id"] for r in rows] == ["z2"]
    assert (inside, after) == ("off", "on")


def test_lazy_moves_are_the_broker_outcomes_after_the_write_ahead() -> None:
    assert not lazy_move(S.PENDING, S.PROCESSING)
    assert not lazy_move(S.PROCESSING, S.SUBMITTED)  # the write-ahead
    assert not lazy_move(S.SUBMITTED, S.REJECTED)
    assert not lazy_move(S.SUBMITTED, S.UNKNOWN)
    assert not lazy_move(S.PROCESSING, S.DENIED)
    assert lazy_move(S.SUBMITTED, S.WORKING)
    assert lazy_move(S.SUBMITTED, S.FILLED)
    assert lazy_move(S.WORKING, S.PARTIALLY_FILLED)
    assert lazy_move(S.PARTIALLY_FILLED, S.FILLED)
    assert lazy_move(S.WORKING, S.CANCELLED)
