"""Notifications (issue 14) against real local receivers: an HTTP server for apprise's json://
and form:// posts, an SMTP server for its email; the ledger on a real PostgreSQL, ``serve`` on
the simulator where a real condition can be driven."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from _support.receivers import HttpReceiver, body_text, http_receiver, smtp_receiver
from _support.runtime import serve_settings, serving, until_final
from tradebridge.config import Settings, load_settings
from tradebridge.dispatch.reconcile import LostOrder
from tradebridge.errors import ConfigError
from tradebridge.runtime.notify import Notifier, Sender, build_channels, scrub, send_test
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

SECRET = "notify-test-webhook-secret"
FIRST, SECOND = "DEMO0000001", "DEMO0000002"
FAST = {"interval_s": 0.1, "send_timeout_s": 5, "attempts": 3, "retry_wait_s": 0.05,
        "retry_max_s": 0.2, "rows_window_s": 0}  # fmt: skip


def _channels(monkeypatch: pytest.MonkeyPatch, **urls: str) -> list[dict[str, Any]]:
    for name, url in urls.items():
        monkeypatch.setenv(f"TRADEBRIDGE_NOTIFY_{name.upper()}_URL", url)
    return [{"name": name} for name in urls]


def _notify_settings(channels: list[dict[str, Any]], **notify: Any) -> Settings:
    return load_settings(notify={"channels": channels, **FAST, **notify})


async def _until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def _sends(database: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database)
    try:
        return await conn.fetch("select * from notifications order by id")
    finally:
        await conn.close()


def _titles(receiver: HttpReceiver) -> list[str]:
    return [str(p.body.get("title")) for p in receiver.posts]


# --- channels -------------------------------------------------------------------------------


async def test_send_test_reaches_json_form_and_email_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with http_receiver() as http, smtp_receiver() as smtp:
        channels = _channels(
            monkeypatch, hook=f"json://{http.host}/hook", form=f"form://{http.host}/form",
            mail=f"mailto://127.0.0.1:{smtp.port}?from=bot@example.com&to=ops@example.com"
                 "&mode=insecure",
        )  # fmt: skip
        records = await send_test(_notify_settings(channels))
        posts = http.wait_for(2)
        mails = smtp.wait_for(1)
    assert {r.channel: r.outcome for r in records} == {
        "hook (json)": "sent", "form (form)": "sent", "mail (mailto)": "sent",
    }  # fmt: skip
    by_path = {p.path: p.body for p in posts}
    assert by_path["/hook"]["title"] == "tradebridge: test message"
    assert by_path["/form"]["title"] == "tradebridge: test message"
    assert mails[0]["Subject"] == "tradebridge: test message"
    assert "can reach this channel" in body_text(mails[0])
    assert smtp.envelopes == [("bot@example.com", ["ops@example.com"])]


def test_build_channels_without_url_names_the_variable_not_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRADEBRIDGE_NOTIFY_OPS_URL", raising=False)
    settings = load_settings(notify={"channels": [{"name": "ops"}]})
    with pytest.raises(ConfigError, match="TRADEBRIDGE_NOTIFY_OPS_URL"):
        build_channels(settings.notify)


def test_build_channels_with_an_unknown_scheme_names_the_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channels = _channels(monkeypatch, ops="nosuchservice://tok3n-s3cret@x")
    with pytest.raises(ConfigError, match="notify channel ops") as caught:
        build_channels(load_settings(notify={"channels": channels}).notify)
    assert "s3cret" not in str(caught.value)


def test_scrub_removes_every_secret_part_of_the_url() -> None:
    url = "discord://webhookid1234/t0ken-secret-value?avatar=no&botname=tradebridge"
    text = f"failed to send to {url}: 401 for t0ken-secret-value at webhookid1234"
    out = scrub(text, url)
    assert "t0ken-secret-value" not in out
    assert "webhookid1234" not in out


async def test_sender_retries_after_a_receiver_failure_and_records_the_attempts(
    monkeypatch: pytest.MonkeyPatch, fresh_db: str
) -> None:
    with http_receiver() as http:
        http.fail_next = 2
        settings = _notify_settings(_channels(monkeypatch, hook=f"json://{http.host}/hook"))
        async with await Ledger.connect(fresh_db) as ledger:
            records = await send_test(settings, ledger=ledger)
        http.wait_for(1)
    assert http.tries == 3
    assert [(r.outcome, r.attempts) for r in records] == [("sent", 3)]
    stored = await _sends(fresh_db)
    assert [(r["channel"], r["outcome"], r["attempts"]) for r in stored] == [
        ("hook (json)", "sent", 3)
    ]
    assert http.host not in str([dict(r) for r in stored])  # the URL is never stored


async def test_sender_gives_up_after_its_attempts_and_records_the_failure(
    monkeypatch: pytest.MonkeyPatch, fresh_db: str
) -> None:
    with http_receiver() as http:
        http.fail_next = 10
        settings = _notify_settings(_channels(monkeypatch, hook=f"json://{http.host}/hook"))
        async with await Ledger.connect(fresh_db) as ledger:
            records = await send_test(settings, ledger=ledger)
    assert [(r.outcome, r.attempts) for r in records] == [("failed", 3)]
    assert records[0].error
    assert [r["outcome"] for r in await _sends(fresh_db)] == ["failed"]


# --- conditions through the ledger: dedupe, rate limit, resolution, two workers --------------


async def _pending(ledger: Ledger, signal_id: str) -> None:
    await ledger.insert_signal(signal_id=signal_id, account_name=FIRST, instrument="MNQ1!",
                               side="buy", quantity=1)  # fmt: skip


async def test_two_notifiers_on_one_ledger_announce_a_condition_once_and_resolve_it_once(
    monkeypatch: pytest.MonkeyPatch, fresh_db: str
) -> None:
    with http_receiver() as http:
        settings = _notify_settings(
            _channels(monkeypatch, hook=f"json://{http.host}/hook"), queue_depth=1
        )
        async with (
            await Ledger.connect(fresh_db) as one, await Ledger.connect(fresh_db) as two,
        ):  # fmt: skip
            channels = build_channels(settings.notify)
            notifiers = [
                Notifier(settings, ledger, Sender(channels, settings.notify, ledger=ledger))
                for ledger in (one, two)
            ]
            tasks = [asyncio.create_task(n.run()) for n in notifiers]
            try:
                await _pending(one, "waiting")  # no worker: the queue backs up
                await http.until(1)
                # Both keep seeing it for many rounds: still one message.
                ticks = [n.ticks for n in notifiers]
                await _until(lambda: _all_ticked(notifiers, ticks, 5), 20, "five more rounds")
                assert len(http.posts) == 1
                await one.transition("waiting", _status("cancelled"), expected=_status("pending"),
                                     event="cancelled")  # fmt: skip
                await http.until(2)
                ticks = [n.ticks for n in notifiers]
                await _until(lambda: _all_ticked(notifiers, ticks, 5), 20, "five more rounds")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    assert _titles(http) == [
        "tradebridge: signal queue backing up",
        "tradebridge: resolved: signal queue backing up",
    ]
    assert "1 signal(s) pending" in http.posts[0].body["message"]


def _status(name: str) -> Any:
    from tradebridge.domain.lifecycle import SignalStatus

    return SignalStatus(name)


async def _all_ticked(notifiers: list[Notifier], before: list[int], more: int) -> bool:
    return all(n.ticks >= b + more for n, b in zip(notifiers, before, strict=True))


async def test_condition_flapping_inside_the_window_is_announced_once(
    monkeypatch: pytest.MonkeyPatch, fresh_db: str
) -> None:
    with http_receiver() as http:
        settings = _notify_settings(
            _channels(monkeypatch, hook=f"json://{http.host}/hook"), queue_depth=1
        )
        async with await Ledger.connect(fresh_db) as ledger:
            sender = Sender(build_channels(settings.notify), settings.notify, ledger=ledger)
            notifier = Notifier(settings, ledger, sender)
            task = asyncio.create_task(notifier.run())
            try:
                for n in range(2):  # on, off, on, off inside one window
                    await _pending(ledger, f"row-{n}")
                    await _until(lambda: _state_active(ledger, True), 20, "the condition on")
                    await ledger.transition(f"row-{n}", _status("cancelled"),
                                            expected=_status("pending"),
                                            event="cancelled")  # fmt: skip
                    await _until(lambda: _state_active(ledger, False), 20, "the condition off")
                await _until(lambda: _no_backlog(sender), 20, "the queue to drain")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        stored = await _sends(fresh_db)
    # Raised once, resolved once; the second episode fell inside the window: told neither.
    assert [(r["phase"], r["outcome"]) for r in stored] == [
        ("raised", "sent"),
        ("resolved", "sent"),
    ]
    assert _titles(http) == [
        "tradebridge: signal queue backing up",
        "tradebridge: resolved: signal queue backing up",
    ]


async def _state_active(ledger: Ledger, active: bool) -> bool:
    found = await ledger.pool.fetchval(
        "select active from notification_state where key = 'queue_backlog'"
    )
    return found is active


async def _no_backlog(sender: Sender) -> bool:
    return sender.pending() == 0


# --- through serve on the simulator -------------------------------------------------------


def _serve(sim: SimServer, database: str, redis: str, data_dir: Path, **notify: Any) -> Any:
    return serve_settings(sim, database, redis, data_dir, secret=SECRET,
                          notify={**FAST, **notify})  # fmt: skip


async def test_serve_announces_the_kill_switch_the_denied_row_and_the_resolution(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    with http_receiver() as http:
        channels = _channels(monkeypatch, hook=f"json://{http.host}/hook")
        settings = _serve(sim_tokens, fresh_db, redis_server.url, tmp_path, channels=channels)
        async with serving(settings), await Ledger.connect(fresh_db) as ledger:
            await ledger.engage_kill_switch(FIRST, changed_by="ana", via="cli",
                                            reason="runaway strategy")  # fmt: skip
            await http.until(1)
            await _pending(ledger, "after-kill")
            row = await until_final(ledger, "after-kill")
            await http.until(2)
            await ledger.release_kill_switch(FIRST, changed_by="ana", via="cli")
            await http.until(3)
            # Each delivery is recorded after its channel answered: wait for the third.
            deadline = time.monotonic() + 30
            while len(await _sends(fresh_db)) < 3:
                assert time.monotonic() < deadline, "the third delivery was never recorded"
                await asyncio.sleep(0.05)
    assert row.status.value == "denied"
    kill, denied, resolved = (p.body for p in http.posts)
    assert kill["title"] == "tradebridge: kill switch on"
    assert f"kill switch ON for {FIRST}" in kill["message"]
    assert "runaway strategy" in kill["message"]
    assert denied["title"] == "tradebridge: 1 signals denied"
    assert "after-kill" in denied["message"]
    assert "kill switch is on" in denied["message"]  # the rule's reason
    assert resolved["title"] == "tradebridge: resolved: kill switch on"
    stored = await _sends(fresh_db)
    assert [(r["kind"], r["phase"], r["outcome"]) for r in stored] == [
        ("kill_switch", "raised", "sent"), ("denied", "rows", "sent"),
        ("kill_switch", "resolved", "sent"),
    ]  # fmt: skip


async def test_serve_places_orders_while_a_channel_hangs(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    with http_receiver() as http:
        http.hang = True
        channels = _channels(monkeypatch, hook=f"json://{http.host}/hook")
        settings = _serve(sim_tokens, fresh_db, redis_server.url, tmp_path, channels=channels,
                          send_timeout_s=60, attempts=1)  # fmt: skip
        async with serving(settings), await Ledger.connect(fresh_db) as ledger:
            await ledger.engage_kill_switch(SECOND, changed_by="ana", via="cli")
            await http.until_tries(1)  # the channel now holds the notice and does not answer
            await _pending(ledger, "placed")
            row = await until_final(ledger, "placed")
            still_hanging = not http.posts and not http.release.is_set()
            http.release.set()
    assert row.status.value == "filled"
    assert still_hanging


async def test_serve_announces_auth_failure_and_lockout(
    monkeypatch: pytest.MonkeyPatch, sim: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()  # no token for any account: authentication cannot succeed
    await client.set("lockout:token:apex", "captcha penalty on login", ex=3600)
    try:
        with http_receiver() as http:
            channels = _channels(monkeypatch, hook=f"json://{http.host}/hook")
            settings = _serve(sim, fresh_db, redis_server.url, tmp_path, channels=channels)
            async with serving(settings):
                await http.until(2)
    finally:
        await client.aclose()
    titles = _titles(http)
    assert "tradebridge: Tradovate lockout" in titles
    assert "tradebridge: Tradovate authentication failing" in titles
    lockout = next(p.body for p in http.posts if p.body["title"].endswith("lockout"))
    assert "captcha penalty on login" in lockout["message"]


async def test_cli_notify_test_prints_each_channels_outcome(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from tradebridge.cli.main import app

    with http_receiver() as http:
        config = tmp_path / "tradebridge.toml"
        config.write_text('[[notify.channels]]\nname = "hook"\n\n[[notify.channels]]\n'
                          'name = "down"\n\n[notify]\nattempts = 1\n')  # fmt: skip
        env = {"TRADEBRIDGE_CONFIG": str(config), "DATABASE_URL": "",
               "TRADEBRIDGE_NOTIFY_HOOK_URL": f"json://{http.host}/hook",
               "TRADEBRIDGE_NOTIFY_DOWN_URL": "json://127.0.0.1:1/nothing-listens"}  # fmt: skip
        result = await asyncio.to_thread(
            CliRunner().invoke, app, ["notify", "test"], env=env, terminal_width=200
        )
        await http.until(1)
    assert result.exit_code == 1, result.output
    assert "hook (json): sent after 1 attempt(s)" in result.stdout
    assert "down (json): failed after 1 attempt(s)" in result.stdout
    assert "nothing-listens" not in result.output


async def test_open_orders_the_broker_does_not_know_are_announced_per_account(
    monkeypatch: pytest.MonkeyPatch, fresh_db: str
) -> None:
    # What reconcile reports (Reconciler.lost_orders): rows held open whose order the broker
    # answers it has no such order for. One condition per account, listing its rows.
    lost = [
        LostOrder(FIRST, "990000002", "sig-b", datetime(2026, 12, 7, 10, 5, tzinfo=UTC), 3),
        LostOrder(FIRST, "990000001", "sig-a", datetime(2026, 12, 7, 10, 0, tzinfo=UTC), 4),
    ]
    with http_receiver() as http:
        settings = _notify_settings(_channels(monkeypatch, hook=f"json://{http.host}/hook"))
        async with await Ledger.connect(fresh_db) as ledger:
            sender = Sender(build_channels(settings.notify), settings.notify, ledger=ledger)
            notifier = Notifier(settings, ledger, sender, lost=lambda: lost)
            task = asyncio.create_task(notifier.run())
            try:
                await _until(lambda: _has_posts(http), 20, "the notice")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    [post] = http.posts
    body = str(post.body.get("message"))
    assert post.body.get("title") == "tradebridge: reconcile found the broker disagreeing"
    assert f"2 open order(s) of {FIRST} unknown to Tradovate" in body
    assert body.index("sig-a (order 990000001)") < body.index("sig-b (order 990000002)")
    assert f"tradebridge orders {FIRST}" in body


async def _has_posts(receiver: HttpReceiver) -> bool:
    return bool(receiver.posts)


async def test_lost_orders_notice_from_before_a_restart_is_held_while_reconcile_counts(
    monkeypatch: pytest.MonkeyPatch, fresh_db: str
) -> None:
    # A process announced a lost order and stopped; the next one's reconcile starts counting
    # from nothing. Its notifier must not tell the notice resolved (only to raise it again
    # three answers later) while reconcile has not read the rows, or is still counting.
    lost = [LostOrder(FIRST, "990000001", "sig-a", datetime(2026, 12, 7, 10, 0, tzinfo=UTC), 3)]
    with http_receiver() as http:
        settings = _notify_settings(_channels(monkeypatch, hook=f"json://{http.host}/hook"))
        grace = 3 * settings.notify.interval_s + 2.0  # Notifier.tick's
        async with await Ledger.connect(fresh_db) as ledger:
            before = Notifier(settings, ledger, Sender(build_channels(settings.notify),
                                                       settings.notify, ledger=ledger),
                              lost=lambda: lost)  # fmt: skip
            task = asyncio.create_task(before.run())
            try:
                await http.until(1)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

            counting: list[frozenset[str] | None] = [None]
            after = Notifier(settings, ledger, Sender(build_channels(settings.notify),
                                                      settings.notify, ledger=ledger),
                             lost=list, judging=lambda: counting[0])  # fmt: skip
            task = asyncio.create_task(after.run())
            try:
                for state in (None, frozenset({FIRST})):  # not read yet; then still counting
                    counting[0] = state
                    await _past_grace(after, grace)
                    assert await _active(ledger, f"lost_orders:{FIRST}"), state
                    assert len(http.posts) == 1, _titles(http)
                counting[0] = frozenset()  # counted: not lost after all
                await http.until(2)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    assert _titles(http) == [
        "tradebridge: reconcile found the broker disagreeing",
        "tradebridge: resolved: reconcile found the broker disagreeing",
    ]


async def _past_grace(notifier: Notifier, grace_s: float) -> None:
    """Wait until the notifier has ticked twice after ``grace_s`` from now went by."""
    past = time.monotonic() + grace_s + 0.5
    await _until(lambda: _after(past), grace_s + 20, "the grace to go by")
    ticks = notifier.ticks
    await _until(lambda: _ticked(notifier, ticks + 2), 20, "two more rounds")


async def _after(moment: float) -> bool:
    return time.monotonic() >= moment


async def _ticked(notifier: Notifier, ticks: int) -> bool:
    return notifier.ticks >= ticks


async def _active(ledger: Ledger, key: str) -> bool:
    return bool(
        await ledger.pool.fetchval("select active from notification_state where key = $1", key)
    )
