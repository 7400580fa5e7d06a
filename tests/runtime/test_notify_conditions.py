"""Each notification of issue 14 driven by its real condition: ``serve`` in-process on the
simulator (fault injection for the broker's rejection and lost answers, a TCP gate cut in
front of its WebSocket, short-lived tokens, a risk limit reached), the messages taken by a
real local HTTP receiver and read back from the ledger's ``notifications`` table; and the
reminders of a condition that holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from _support.gate import TcpGate, tcp_gate
from _support.receivers import HttpReceiver, Received, http_receiver
from _support.runtime import serve_settings, serving, until_final
from tradebridge.config import Settings, load_settings
from tradebridge.domain.contracts import resolve_symbol
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.runtime.notify import Notifier, Sender, build_channels
from tradebridge.runtime.notify import test_notice as notice_of_a_test  # not a test
from tradebridge.sim.seed import TokenSeeder
from tradebridge.sim.server import SimServer
from tradebridge.sim.websocket import socket_registry
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

SECRET = "notify-conditions-test-webhook-secret"
FIRST = "DEMO0000001"
FAST = {"interval_s": 0.1, "send_timeout_s": 5, "attempts": 3, "retry_wait_s": 0.05,
        "retry_max_s": 0.2, "rows_window_s": 0}  # fmt: skip
# Deadlines, not expectations: generous for a loaded 2-core machine.
WAIT_S = 30.0


def _hook(monkeypatch: pytest.MonkeyPatch, http: HttpReceiver) -> list[dict[str, Any]]:
    monkeypatch.setenv("TRADEBRIDGE_NOTIFY_HOOK_URL", f"json://{http.host}/hook")
    return [{"name": "hook"}]


def _serve(
    sim: SimServer, database: str, redis: str, data_dir: Path, channels: list[dict[str, Any]],
    *, notify: dict[str, Any] | None = None, gate: TcpGate | None = None, **sections: Any,
) -> Settings:  # fmt: skip
    settings: Settings = serve_settings(
        sim, database, redis, data_dir, secret=SECRET,
        notify={**FAST, "channels": channels, **(notify or {})}, **sections,
    )  # fmt: skip
    if gate is None:
        return settings
    # The user-sync WebSocket goes through the gate; REST goes straight to the simulator.
    ws_url = f"ws://127.0.0.1:{gate.port}/v1/websocket"
    tradovate = settings.tradovate.model_copy(update={"ws_url": ws_url})
    return settings.model_copy(update={"tradovate": tradovate})


async def _until(predicate: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT_S
                 ) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not (found := await predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return found


async def _post(http: HttpReceiver, title: str, *, after: int = -1) -> Received:
    """Wait for the first post titled ``title`` (at an index past ``after``); return it."""

    async def found() -> Received | None:
        posts = list(http.posts)[after + 1 :]
        return next((p for p in posts if p.body.get("title") == title), None)

    post: Received = await _until(found, f"a message titled {title!r}")
    return post


async def _stored(database: str, key: str, phase: str) -> asyncpg.Record:
    """Wait for the ledger's record of a delivery of ``key`` (a LIKE pattern) in ``phase``;
    return it."""

    async def found() -> asyncpg.Record | None:
        conn = await asyncpg.connect(database)
        try:
            return await conn.fetchrow(
                "select * from notifications where key like $1 and phase = $2 order by id limit 1",
                key, phase,
            )  # fmt: skip
        finally:
            await conn.close()

    record: asyncpg.Record = await _until(found, f"a {phase} notification of {key} recorded")
    return record


async def _buy(ledger: Ledger, signal_id: str, **fields: Any) -> None:
    row = {"instrument": "MNQ1!", "side": "buy", "quantity": 1, **fields}
    await ledger.insert_signal(signal_id=signal_id, account_name=FIRST, **row)


async def _status(ledger: Ledger, signal_id: str, *statuses: str) -> bool:
    row = await ledger.get(signal_id)
    return row is not None and row.status.value in statuses


def _far_below(sim: SimServer) -> str:
    name = resolve_symbol("MNQ1!", datetime.now(UTC).date()).name

    def read() -> Decimal:
        contract = sim.ctx.engine.find_contract(name)
        assert contract is not None
        return sim.ctx.engine.quote(contract.id).last

    last = sim.call(read)
    return str((last * Decimal("0.9") / Decimal("0.25")).to_integral_value() * Decimal("0.25"))


# --- rows: the broker's rejection, reconcile's corrections ----------------------------------


async def test_serve_announces_a_broker_rejection_with_the_brokers_reason(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    faults = sim_tokens.ctx.faults
    faults.inject_failure_reason = "UnknownReason"
    faults.inject_failure_text = "Insufficient margin for this order (simulated)"
    faults.inject_failure_count = 1
    with http_receiver() as http:
        settings = _serve(
            sim_tokens, fresh_db, redis_server.url, tmp_path, _hook(monkeypatch, http)
        )
        async with serving(settings), await Ledger.connect(fresh_db) as ledger:
            await _buy(ledger, "refused")
            row = await until_final(ledger, "refused")
            post = await _post(http, "tradebridge: 1 orders rejected by the broker")
            stored = await _stored(fresh_db, "rows:rejected", "rows")
    assert row.status is SignalStatus.REJECTED
    assert "refused" in post.body["message"]
    assert "Insufficient margin for this order (simulated)" in post.body["message"]
    assert "docs/notifications.md#rejected" in post.body["message"]
    assert (stored["kind"], stored["outcome"], stored["channel"]) == ("rejected", "sent",
                                                                       "hook (json)")  # fmt: skip


async def test_serve_announces_a_reconcile_correction_the_websocket_missed(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    sim = sim_tokens
    assert sim.url.startswith("http://127.0.0.1:")
    async with tcp_gate("127.0.0.1", int(sim.url.rsplit(":", 1)[1])) as gate:
        with http_receiver() as http:
            settings = _serve(
                sim, fresh_db, redis_server.url, tmp_path, _hook(monkeypatch, http), gate=gate,
                dispatcher={"reconcile_interval_s": 0.3},
            )  # fmt: skip
            async with serving(settings), await Ledger.connect(fresh_db) as ledger:
                await _buy(ledger, "resting", order_type="limit", price=_far_below(sim))
                await _until(lambda: _status(ledger, "resting", "working"), "the order to rest")
                gate.cut()  # the cancel's events never reach the ledger
                sim.call(lambda: _cancel_at_broker(sim, "tb-resting"))
                row = await until_final(ledger, "resting", timeout=WAIT_S)
                post = await _post(http, "tradebridge: 1 reconcile found the broker disagreeing")
                stored = await _stored(fresh_db, "rows:reconciled", "rows")
    assert row.status is SignalStatus.CANCELLED
    assert "reconciled" in [e.event for e in await _history(fresh_db, "resting")]
    message = post.body["message"]
    assert f"resting: {FIRST}" in message
    assert "the ledger had it working, the broker says cancelled; now cancelled" in message
    assert (stored["kind"], stored["outcome"]) == ("reconcile_divergence", "sent")


def _cancel_at_broker(sim: SimServer, cl_ord_id: str) -> None:
    [order] = [o for o in sim.ctx.engine.orders() if o.cl_ord_id == cl_ord_id]
    sim.ctx.engine.cancel_order(order.id)


async def _history(database: str, signal_id: str) -> list[Any]:
    async with await Ledger.connect(database) as ledger:
        return list(await ledger.history(signal_id))


# --- conditions and their resolution -------------------------------------------------------


async def test_serve_announces_an_outcome_unknown_past_the_bound_then_its_resolution(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    sim = sim_tokens
    faults = sim.ctx.faults
    async with tcp_gate("127.0.0.1", int(sim.url.rsplit(":", 1)[1])) as gate:
        with http_receiver() as http:
            settings = _serve(
                sim, fresh_db, redis_server.url, tmp_path, _hook(monkeypatch, http), gate=gate,
                notify={"unknown_after_s": 0.5}, dispatcher={"reconcile_interval_s": 0.3},
            )  # fmt: skip
            async with serving(settings), await Ledger.connect(fresh_db) as ledger:
                await _until(lambda: _forwarded(gate), "the WebSocket to connect")
                # The order is accepted, its answer lost; its events cannot arrive and the
                # lookups cannot read the account's orders: its outcome stays unknown.
                gate.cut()
                faults.missing_routes = ["order/deps", "order/list"]
                faults.drop_mode = "reset"
                faults.drop_after_accept_rate = 1.0
                await _buy(ledger, "lost")
                raised = await _post(http, "tradebridge: order outcomes still unknown")
                faults.drop_after_accept_rate = 0.0
                faults.missing_routes = []
                gate.open()
                row = await until_final(ledger, "lost", timeout=WAIT_S)
                resolved = await _post(http, "tradebridge: resolved: order outcomes still unknown")
                stored = await _stored(fresh_db, "unknown_unresolved", "resolved")
    assert "lost (DEMO0000001, " in raised.body["message"]
    assert "unknown for more than 0.5 s" in raised.body["message"]
    assert raised.body["type"] == "failure"
    assert resolved.body["type"] == "success"
    assert row.status is SignalStatus.FILLED
    assert stored["kind"] == "unknown_unresolved"
    assert (await _stored(fresh_db, "unknown_unresolved", "raised"))["outcome"] == "sent"


async def _forwarded(gate: TcpGate) -> bool:
    return gate.forwarded > 0


async def test_serve_announces_a_websocket_down_then_its_resolution(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    sim = sim_tokens
    async with tcp_gate("127.0.0.1", int(sim.url.rsplit(":", 1)[1])) as gate:
        with http_receiver() as http:
            settings = _serve(
                sim, fresh_db, redis_server.url, tmp_path, _hook(monkeypatch, http), gate=gate,
                notify={"websocket_down_s": 0.5, "window_s": 0.1},
                tradovate={"ws_reconnect_max_s": 0.5},
            )  # fmt: skip
            async with serving(settings):
                users = len(sim.config.users)
                await _until(lambda: _synced_at_sim(sim, users), "every user's socket synced")
                # A loaded machine may connect slower than websocket_down_s at start (down,
                # then resolved: told too); the cut is a new episode either way.
                await _until(lambda: _no_websocket_down(fresh_db), "no socket down")
                mark = len(http.posts)
                gate.cut()
                down = await _post(http, "tradebridge: WebSocket down", after=mark)
                refused = gate.refused
                gate.open()
                resolved = await _post(
                    http, "tradebridge: resolved: WebSocket down", after=http.posts.index(down)
                )
                stored = await _stored(fresh_db, down_key(down), "resolved")
    assert refused >= 1  # it kept trying while the link was down
    assert "user-sync WebSocket of Tradovate user" in down.body["message"]
    assert "is down for" in down.body["message"]
    assert "Resolved after" in resolved.body["message"]
    assert stored["kind"] == "websocket_down"


async def _synced_at_sim(sim: SimServer, users: int) -> bool:
    def synced() -> int:
        return sum(1 for c in socket_registry(sim.ctx).connections if c.sync is not None)

    return sim.call(synced) >= users


async def _no_websocket_down(database: str) -> bool:
    conn = await asyncpg.connect(database)
    try:
        return not await conn.fetchval(
            "select count(*) from notification_state where kind = 'websocket_down' and active"
        )
    finally:
        await conn.close()


def down_key(post: Received) -> str:
    """Return the condition key of a WebSocket message (``websocket:<user id>``)."""
    words = post.body["message"].split()
    return "websocket:" + words[words.index("user") + 1]


async def test_serve_announces_a_token_about_to_expire_then_its_renewal(
    monkeypatch: pytest.MonkeyPatch, sim: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    # The token writer hands out tokens that live 300 s, under token_expiring_s (600 s).
    sim.ctx.faults.token_lifetime_s = 300
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    await TokenSeeder(sim.ctx, client).seed()
    try:
        with http_receiver() as http:
            settings = _serve(sim, fresh_db, redis_server.url, tmp_path, _hook(monkeypatch, http),
                              dispatcher={"workers": 0})  # fmt: skip
            async with serving(settings):
                raised = await _post(http, "tradebridge: token about to expire, not renewed")
                # The writer comes back and writes fresh tokens (80 min).
                sim.ctx.faults.token_lifetime_s = None
                await TokenSeeder(sim.ctx, client).seed()
                resolved = await _post(
                    http, "tradebridge: resolved: token about to expire, not renewed"
                )
                user = sim.config.users[0].name
                stored = await _stored(fresh_db, f"token_expiring:{user}", "resolved")
    finally:
        await client.aclose()
    assert f"the token of {user} expires soon" in raised.body["message"]
    assert f"{FIRST}: expires at" in raised.body["message"]
    assert "docs/notifications.md#token-expiring" in raised.body["message"]
    assert f"the token of {user} expires soon" in resolved.body["message"]
    assert stored["outcome"] == "sent"


async def test_serve_announces_a_risk_limit_reached_naming_the_account_and_rule(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    with http_receiver() as http:
        settings = _serve(
            sim_tokens, fresh_db, redis_server.url, tmp_path, _hook(monkeypatch, http),
            risk={"trading_hours": "always", "max_orders_per_day": 1},
            serve={"risk_state_interval_s": 0.1},
        )  # fmt: skip
        async with serving(settings), await Ledger.connect(fresh_db) as ledger:
            await _buy(ledger, "only")
            filled = await until_final(ledger, "only")
            post = await _post(http, "tradebridge: risk limit reached")
            await _buy(ledger, "one-too-many")
            denied = await until_final(ledger, "one-too-many")
            stored = await _stored(fresh_db, f"risk_limit:{FIRST}:max_orders_per_day", "raised")
    assert filled.status is SignalStatus.FILLED
    assert denied.status is SignalStatus.DENIED
    message = post.body["message"]
    assert f"risk limit max_orders_per_day reached on {FIRST}" in message
    assert "max_orders_per_day REACHED" in message  # the account's standing
    assert (stored["kind"], stored["outcome"]) == ("risk_limit", "sent")


# --- reminders -----------------------------------------------------------------------------


async def test_notifier_reminds_of_a_condition_still_on_every_repeat_s_then_resolves(
    monkeypatch: pytest.MonkeyPatch, fresh_db: str
) -> None:
    with http_receiver() as http:
        monkeypatch.setenv("TRADEBRIDGE_NOTIFY_HOOK_URL", f"json://{http.host}/hook")
        settings = load_settings(notify={"channels": [{"name": "hook"}], **FAST,
                                         "queue_depth": 1, "repeat_s": 0.5})  # fmt: skip
        async with await Ledger.connect(fresh_db) as ledger:
            sender = Sender(build_channels(settings.notify), settings.notify, ledger=ledger)
            task = asyncio.create_task(Notifier(settings, ledger, sender).run())
            try:
                await ledger.insert_signal(signal_id="waiting", account_name=FIRST,
                                           instrument="MNQ1!", side="buy", quantity=1)  # fmt: skip
                await http.until(3)  # raised, then two reminders
                await ledger.transition("waiting", SignalStatus.CANCELLED,
                                        expected=SignalStatus.PENDING,
                                        event="cancelled")  # fmt: skip
                await _post(http, "tradebridge: resolved: signal queue backing up")
                await _stored(fresh_db, "queue_backlog", "resolved")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        conn = await asyncpg.connect(fresh_db)
        try:
            stored = await conn.fetch("select phase, ts_queued from notifications order by id")
        finally:
            await conn.close()
    phases = [r["phase"] for r in stored]
    assert phases[0] == "raised"
    assert phases[-1] == "resolved"
    assert set(phases[1:-1]) == {"reminder"}
    assert len(phases) >= 4
    titles = [str(p.body["title"]) for p in http.posts]
    assert titles[1] == "tradebridge: signal queue backing up (still on)"
    queued = [r["ts_queued"] for r in stored[:-1]]
    # Reminders are spaced by repeat_s (0.5 s), not by the interval (0.1 s): n reminders
    # span at least about n * 0.5 s (the queueing times carry some scheduling jitter).
    span = (queued[-1] - queued[0]).total_seconds()
    assert span >= 0.5 * (len(queued) - 1) - 0.25, (span, len(queued))


async def test_notifier_stops_on_its_first_cancel_even_when_a_source_loses_it(
    fresh_db: str,
) -> None:
    # Python 3.11's asyncio.wait_for (asyncpg's) returns a result that races a cancellation
    # and drops the cancellation: the source below does the same on purpose. The notifier
    # must still stop (a serve whose shutdown waited on it hung in CI).
    settings = load_settings(notify={"channels": [], **FAST})
    reading = asyncio.Event()

    async def loses_the_cancel() -> list[Any]:
        reading.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return []  # the answer "arrived" with the cancel: returned, cancel lost
        return []

    async with await Ledger.connect(fresh_db) as ledger:
        sender = Sender([], settings.notify, ledger=ledger)
        notifier = Notifier(settings, ledger, sender)
        notifier.sources = {"losing": loses_the_cancel}
        task = asyncio.create_task(notifier.run())
        await asyncio.wait_for(reading.wait(), WAIT_S)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=WAIT_S)
        assert task in done, "the notifier went round again after losing its cancel"
        assert task.cancelled()


# --- the notifier's own health on /healthz --------------------------------------------------


async def _notify_check(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    answer = await client.get(url)
    assert answer.status_code == 200, answer.text
    check: dict[str, Any] = answer.json()["checks"]["notify"]
    return check


async def test_healthz_notify_degraded_while_a_channels_deliveries_fail_naming_it_not_its_url(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    with http_receiver() as http:
        http.fail_next = 1000
        settings = _serve(sim_tokens, fresh_db, redis_server.url, tmp_path,
                          _hook(monkeypatch, http), notify={"attempts": 1})  # fmt: skip
        async with (
            serving(settings) as found, httpx.AsyncClient(timeout=10) as client,
            await Ledger.connect(fresh_db) as ledger,
        ):  # fmt: skip
            before = await _notify_check(client, found.healthz_url)
            await ledger.engage_kill_switch(FIRST, changed_by="ana", via="cli", reason="test")
            raised = await _stored(fresh_db, "kill_switch:%", "raised")

            async def degraded() -> dict[str, Any] | None:
                check = await _notify_check(client, found.healthz_url)
                return check if check["level"] == "degraded" else None

            failing = await _until(degraded, "/healthz notify degraded")
            body = (await client.get(found.healthz_url)).text
            with http._changed:
                http.fail_next = 0
            await ledger.release_kill_switch(FIRST, changed_by="ana", via="cli")
            await _post(http, "tradebridge: resolved: kill switch on")

            async def ok() -> dict[str, Any] | None:
                check = await _notify_check(client, found.healthz_url)
                return check if check["level"] == "ok" else None

            healed = await _until(ok, "/healthz notify ok again")
    assert (raised["outcome"], raised["channel"]) == ("failed", "hook (json)")
    assert before["level"] == "ok"
    assert before["channels"] == {"hook": {"sent": 0, "failed": 0, "dropped": 0, "queued": 0}}
    assert list(failing["failing"]) == ["hook"]
    assert failing["failing"]["hook"].startswith("its last delivery failed")
    assert failing["channels"]["hook"]["failed"] == 1
    assert http.host not in body  # the URL (and any part of it) never shows
    assert str(http.port) not in body.replace(found.healthz_url, "")
    assert healed["channels"]["hook"]["sent"] == 1
    assert "failing" not in healed


async def test_notify_condition_degraded_when_a_hanging_channels_queue_drops_messages(
    monkeypatch: pytest.MonkeyPatch, fresh_db: str
) -> None:
    with http_receiver() as http:
        http.hang = True
        monkeypatch.setenv("TRADEBRIDGE_NOTIFY_SLOW_URL", f"json://{http.host}/slow")
        settings = load_settings(notify={"channels": [{"name": "slow"}], **FAST,
                                         "queue_size": 1, "attempts": 1,
                                         "send_timeout_s": 60})  # fmt: skip
        async with await Ledger.connect(fresh_db) as ledger:
            sender = Sender(build_channels(settings.notify), settings.notify, ledger=ledger)
            notifier = Notifier(settings, ledger, sender)
            check = notifier.condition()
            sending = asyncio.create_task(sender.run())
            try:
                notice = notice_of_a_test(settings)
                sender.submit(notice)
                await http.until_tries(1)  # the first is in flight, held by the channel
                sender.submit(notice)  # waits in the queue (size 1)
                sender.submit(notice)  # no room: dropped
                found = await check()
                http.release.set()
                await _until(lambda: _drained(sender), "the queue to drain")
                after = await check()
            finally:
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
    assert found.level == "degraded"
    assert found.detail["failing"] == {"slow": "its queue was full: messages dropped"}
    assert found.detail["channels"]["slow"] == {"sent": 0, "failed": 0, "dropped": 1,
                                                "queued": 1}  # fmt: skip
    # Delivered since, but the drop stays visible for window_s.
    assert after.level == "degraded"
    assert after.detail["channels"]["slow"]["sent"] == 2


async def _drained(sender: Sender) -> bool:
    return sender.pending() == 0 and sender.health["slow"].sent == 2
