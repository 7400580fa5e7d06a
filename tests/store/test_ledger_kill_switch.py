"""The kill switches in the ledger (migration 0007) and the watch that keeps them current."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tradebridge.domain.kill import KillSwitches
from tradebridge.errors import StoreError
from tradebridge.obs import metrics
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import KILL_CHANNEL, Ledger


async def _wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_kill_switch_engaged_is_read_back_with_who_when_why(ledger: Ledger) -> None:
    change = await ledger.engage_kill_switch(
        None, changed_by="ops@desk", via="cli", reason="runaway loop"
    )

    found = await ledger.kill_switches()
    switch = found.global_switch
    assert change.before is None
    assert change.changed
    assert switch is not None
    assert (switch.engaged, switch.changed_by, switch.via, switch.reason) == (
        True, "ops@desk", "cli", "runaway loop",
    )  # fmt: skip
    assert switch.changed_at is not None
    assert found.stopping("ACC1") is not None
    assert "ops@desk" in (found.stopping("ACC1") or "")


async def test_kill_switch_of_one_account_stops_that_account_only(ledger: Ledger) -> None:
    await ledger.engage_kill_switch("ACC1", changed_by="ops", via="cli")

    found = await ledger.kill_switches()

    assert not found.global_on
    assert found.stopping("ACC1") is not None
    assert found.stopping("ACC2") is None


async def test_kill_switch_engaged_twice_reports_it_was_already_on(ledger: Ledger) -> None:
    await ledger.engage_kill_switch(None, changed_by="a", via="cli", reason="first")
    again = await ledger.engage_kill_switch(None, changed_by="b", via="http", reason="second")

    assert again.before is not None
    assert again.before.reason == "first"
    assert not again.changed


async def test_kill_switch_resume_releases_only_a_switch_that_is_on(ledger: Ledger) -> None:
    assert await ledger.release_kill_switch(None, changed_by="ops", via="cli") is None
    await ledger.engage_kill_switch(None, changed_by="ops", via="cli")

    change = await ledger.release_kill_switch(None, changed_by="ops2", via="cli", reason="ok")
    again = await ledger.release_kill_switch(None, changed_by="ops2", via="cli")

    assert change is not None
    assert change.changed
    assert (change.after.engaged, change.after.changed_by) == (False, "ops2")
    assert again is None
    assert (await ledger.kill_switches()).stopping("ACC1") is None


async def test_kill_switch_events_keep_every_change_and_refuse_edits(
    ledger: Ledger, ledger_db: str
) -> None:
    await ledger.engage_kill_switch(None, changed_by="a", via="cli", reason="why")
    await ledger.release_kill_switch(None, changed_by="b", via="http")
    conn = await asyncpg.connect(ledger_db)
    try:
        events = await conn.fetch(
            "select scope, engaged, changed_by, via, reason from kill_switch_events order by id"
        )
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("delete from kill_switch_events")
    finally:
        await conn.close()
    assert [tuple(e) for e in events] == [
        ("global", True, "a", "cli", "why"),
        ("global", False, "b", "http", None),
    ]


async def test_kill_switch_with_flatten_queues_one_flatten_row_per_account(
    ledger: Ledger,
) -> None:
    change = await ledger.engage_kill_switch(
        None,
        changed_by="ops",
        via="cli",
        group_id="kill-g1",
        flatten=[("kill-g1-1", "ACC1"), ("kill-g1-2", "ACC2")],
    )

    assert change.signal_ids == ("kill-g1-1", "kill-g1-2")
    rows = [await ledger.get(s) for s in change.signal_ids]
    assert [(r.account_name, r.intent, r.instrument, r.status.value) for r in rows if r] == [
        ("ACC1", "flatten", None, "pending"),
        ("ACC2", "flatten", None, "pending"),
    ]
    assert rows[0] is not None
    assert rows[0].metadata == {
        "kill_switch": {"scope": "global", "by": "ops", "via": "cli", "reason": None}
    }
    events = await ledger.history("kill-g1-1")
    assert [e.event for e in events] == ["received"]


async def test_kill_switch_change_notifies_its_channel(ledger: Ledger, ledger_db: str) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(ledger_db)
    await listener.add_listener(KILL_CHANNEL, lambda *args: received.put_nowait(args[3]))
    try:
        await ledger.engage_kill_switch("ACC1", changed_by="ops", via="cli")
        payload = await asyncio.wait_for(received.get(), 5)
    finally:
        await listener.close()
    assert payload == "account:ACC1"


async def test_kill_switch_scope_written_by_hand_must_be_global_or_an_account(
    ledger_db: str,
) -> None:
    conn = await asyncpg.connect(ledger_db)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "insert into kill_switches (scope, engaged, changed_by) values ('ACC1', true, 'x')"
            )
    finally:
        await conn.close()


# --- the watch -------------------------------------------------------------------------------


async def test_watch_sees_a_kill_by_another_connection_by_its_notification(
    ledger: Ledger, ledger_db: str
) -> None:
    # A poll of a minute: only the notification can make it within the deadline (which is
    # generous for a busy machine; it is milliseconds on a quiet one).
    watch = KillSwitchWatch(ledger, poll_s=60.0)
    task = asyncio.create_task(watch.run())
    other = await Ledger.connect(ledger_db, min_size=1, max_size=1)
    try:
        await asyncio.wait_for(watch.listening.wait(), 10)
        await _wait_until(lambda: watch.fresh, 10, "the first read")
        started = time.monotonic()
        await other.engage_kill_switch(None, changed_by="ops", via="cli")
        await _wait_until(lambda: watch.current.global_on, 10, "the kill to be seen")
        seen_after = time.monotonic() - started
    finally:
        await other.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen_after < 10


async def test_watch_sees_an_update_by_hand_by_polling_without_a_listener(
    ledger: Ledger, ledger_db: str
) -> None:
    watch = KillSwitchWatch(ledger, poll_s=0.1)
    await ledger.engage_kill_switch("ACC1", changed_by="ops", via="cli")
    assert (await watch.state()).stopping("ACC1") is not None
    conn = await asyncpg.connect(ledger_db)
    try:
        await conn.execute("update kill_switches set engaged = false, changed_by = 'psql'")
    finally:
        await conn.close()

    found = await watch.state()  # not running: every call reads

    assert found.stopping("ACC1") is None


async def test_watch_read_since_shares_one_query_between_callers_asking_at_once(
    ledger: Ledger,
) -> None:
    watch = KillSwitchWatch(ledger)
    calls = 0
    real = ledger.kill_switches

    async def counted(*, forced: bool = False) -> KillSwitches:
        nonlocal calls
        calls += 1
        return await real(forced=forced)

    ledger.kill_switches = counted  # type: ignore[method-assign]
    moment = time.monotonic()
    results = await asyncio.gather(*(watch.read_since(moment) for _ in range(10)))
    later = await watch.read_since(time.monotonic())

    assert calls == 2
    assert all(r == results[0] for r in results)
    assert later == results[0]


async def test_watch_read_since_a_moment_after_the_last_read_reads_again(
    ledger: Ledger,
) -> None:
    watch = KillSwitchWatch(ledger)
    before = await watch.read_since(time.monotonic())
    await ledger.engage_kill_switch(None, changed_by="ops", via="cli")

    after = await watch.read_since(time.monotonic())

    assert not before.global_on
    assert after.global_on


async def test_watch_forced_by_the_settings_stops_every_account_and_says_why(
    ledger: Ledger,
) -> None:
    watch = KillSwitchWatch(ledger, forced=True)

    found = await watch.state()

    assert found.global_on
    assert "risk.kill_switch" in (found.stopping("ACC1") or "")


async def test_watch_publishes_each_scope_as_a_metric(ledger: Ledger) -> None:
    watch = KillSwitchWatch(ledger, accounts=["ACC7", "ACC8"])
    await ledger.engage_kill_switch("ACC8", changed_by="ops", via="cli")

    await watch.state()

    body = metrics.render()[0].decode()
    assert 'tradebridge_kill_switch{scope="global"} 0.0' in body
    assert 'tradebridge_kill_switch{scope="account:ACC7"} 0.0' in body
    assert 'tradebridge_kill_switch{scope="account:ACC8"} 1.0' in body


async def test_watch_database_down_raises_a_store_error_and_keeps_the_last_state(
    ledger: Ledger,
) -> None:
    watch = KillSwitchWatch(ledger)
    await ledger.engage_kill_switch(None, changed_by="ops", via="cli")
    await watch.state()
    await ledger.close()

    with pytest.raises(StoreError):
        await watch.state()

    assert watch.current.global_on


@pytest.mark.parametrize("spins", [0, 1, 2])
async def test_watch_cancelled_right_after_a_poke_stops(ledger: Ledger, spins: int) -> None:
    # A notification landing as serve stops: asyncio.wait_for (3.11) would swallow the
    # cancellation and the watch, and serve with it, would never stop.
    watch = KillSwitchWatch(ledger, poll_s=60.0)
    task = asyncio.create_task(watch.run())
    await _wait_until(lambda: watch.fresh, 10, "the first read")
    await asyncio.sleep(0.05)  # past the first read, waiting for a poke

    watch.poke()
    for _ in range(spins):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)

    assert task in done
    assert task.cancelled()
