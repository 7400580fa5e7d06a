"""The dashboard at ``/ui`` (issue 14) over HTTP: an in-process ``serve`` on a fresh
PostgreSQL, the session Redis and the simulator. Login, sessions and CSRF; the signals list,
its live stream, a trace, accounts with a cancel, health with the kill switch, latency; and
no secret on any page."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from _support.dashboard import (
    FIRST,
    PASSWORD,
    SECRET,
    TOKEN,
    csrf_of,
    dashboard_settings,
    far_below,
    logged_in,
    login,
    until,
    webhook_body,
    working_orders,
)
from _support.runtime import serving, until_final
from tradebridge.runtime.dashboard._session import SESSION_COOKIE, LoginLimiter, Sessions
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger, PositionCheck

# --- sessions, CSRF and the rate limit, alone ------------------------------------------------


def test_session_cookie_round_trips_and_refuses_tampering_and_expiry() -> None:
    now = [1000.0]
    sessions = Sessions("a-long-enough-password", ttl_s=60, clock=lambda: now[0])
    cookie, session = sessions.issue()
    payload, mac = cookie.split(".")

    assert sessions.read(cookie) == session
    assert sessions.read(f"{payload}x.{mac}") is None
    assert sessions.read(f"{payload}.{mac[:-2]}AA") is None
    assert Sessions("another-long-password", ttl_s=60).read(cookie) is None
    now[0] += 61
    assert sessions.read(cookie) is None


def test_csrf_token_belongs_to_its_session() -> None:
    sessions = Sessions("a-long-enough-password", ttl_s=60)
    _, mine = sessions.issue()
    _, other = sessions.issue()

    assert sessions.csrf_matches(mine.id, sessions.csrf(mine.id))
    assert not sessions.csrf_matches(mine.id, sessions.csrf(other.id))
    assert not sessions.csrf_matches(mine.id, None)
    assert not sessions.csrf_matches(mine.id, "")


def test_login_limiter_refuses_past_the_rate_then_forgives() -> None:
    now = [0.0]
    limiter = LoginLimiter(3, clock=lambda: now[0])
    assert [limiter.allow("1.2.3.4") for _ in range(3)] == [None, None, None]
    wait = limiter.allow("1.2.3.4")
    assert wait is not None
    assert 0 < wait <= 60
    assert limiter.allow("5.6.7.8") is None  # per address
    now[0] += 60
    assert limiter.allow("1.2.3.4") is None


# --- over HTTP ------------------------------------------------------------------------------


async def test_dashboard_without_password_answers_404_saying_how_to_enable_it(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path,
                                  dashboard={"password": None})  # fmt: skip
    async with serving(settings) as found, httpx.AsyncClient(timeout=10) as client:
        answers = [await client.get(f"{found.http_url}{path}")
                   for path in ("/ui", "/ui/signals", "/ui/login")]  # fmt: skip
        answers.append(await client.post(f"{found.http_url}/ui/login", data={"password": "x"}))
    for answer in answers:
        assert answer.status_code == 404
        assert "TRADEBRIDGE_DASHBOARD__PASSWORD" in answer.text
        assert "docs/dashboard.md" in answer.text
    assert found.dashboard is False


async def test_dashboard_pages_need_a_login_and_a_wrong_password_is_refused_then_limited(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path,
                                  dashboard={"login_attempts_per_minute": 3})  # fmt: skip
    async with serving(settings) as found, httpx.AsyncClient(timeout=10) as client:
        base = found.http_url
        page = await client.get(f"{base}/ui/signals")
        stream = await client.get(f"{base}/ui/signals/stream")
        kill = await client.post(f"{base}/ui/kill", data={"confirm": "yes"})
        wrong = [await login(client, base, "not-the-password") for _ in range(3)]
        limited = await login(client, base)  # the right one, but too late
        bearer = {"authorization": f"Bearer {TOKEN}"}
        switches = (await client.get(f"{base}/kill", headers=bearer)).json()
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login"
    assert stream.status_code == 401
    assert kill.status_code == 401
    assert switches["kill_switch"]["global"] is False
    assert [w.status_code for w in wrong] == [401, 401, 401]
    assert "wrong password" in wrong[0].text
    assert SESSION_COOKIE not in client.cookies
    assert limited.status_code == 429
    assert "too many login attempts" in limited.text
    assert int(limited.headers["retry-after"]) >= 1


async def test_dashboard_login_sets_a_strict_httponly_expiring_cookie_and_logout_ends_it(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with serving(settings) as found, httpx.AsyncClient(timeout=10) as client:
        base = found.http_url
        answer = await login(client, base)
        signals = await client.get(f"{base}/ui/signals")
        without_csrf = await client.post(f"{base}/ui/logout")
        logout = await client.post(f"{base}/ui/logout", data={"csrf": csrf_of(signals.text)})
        after = await client.get(f"{base}/ui/signals")
    assert answer.status_code == 303
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert signals.status_code == 200
    assert "Content-Security-Policy" in signals.headers
    assert signals.headers["cache-control"] == "no-store"
    assert without_csrf.status_code == 403
    assert logout.status_code == 303
    assert after.status_code == 303


async def test_dashboard_shows_a_webhook_signal_its_trace_and_latency(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with logged_in(settings, fresh_db) as dash:
        found, client, ledger, base = dash.found, dash.client, dash.ledger, dash.base
        sent = await client.post(found.webhook_url, json=webhook_body(strategy="trend"))
        assert sent.status_code == 200, sent.text
        [signal_id] = sent.json()["signal_ids"]
        row = await until_final(ledger, signal_id)
        listed = await client.get(f"{base}/ui/signals", params={"status": "filled"})
        other = await client.get(f"{base}/ui/signals", params={"strategy": "nope"})
        bad = await client.get(f"{base}/ui/signals", params={"since": "yesterday"})
        trace = await client.get(f"{base}/ui/trace/{signal_id}")
        missing = await client.get(f"{base}/ui/trace/nope")
        latency = await client.get(f"{base}/ui/latency")
    assert row.status.value == "filled"
    assert signal_id in listed.text
    assert 'data-status="filled"' in listed.text
    assert "webhook" in listed.text
    assert str(row.tradovate_order_id) in listed.text
    assert signal_id not in other.text
    assert bad.status_code == 400
    assert "neither an age" in bad.text
    assert trace.status_code == 200
    for part in ("Parsed intent", "Risk verdicts", "max_order_qty", "placeorder", "claimed",
                 "submitted", "Payload (secrets masked)", "***"):  # fmt: skip
        assert part in trace.text, part
    assert missing.status_code == 404
    assert latency.status_code == 200
    assert "<svg" in latency.text
    assert "received → accepted" in latency.text
    assert "100.0 %" in latency.text  # one verdict, accepted


async def test_dashboard_stream_sends_the_rows_again_when_one_changes(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with serving(settings) as found, httpx.AsyncClient(timeout=10) as client:
        base = found.http_url
        await login(client, base)
        events: list[str] = []
        async with (
            asyncio.timeout(30),
            client.stream("GET", f"{base}/ui/signals/stream", params={"since": "1h"}) as stream,
        ):
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            sent = False
            async for line in lines:
                if not line.startswith("data: "):
                    continue
                events.append(json.loads(line.removeprefix("data: "))["html"])
                if not sent:
                    sent = True
                    answer = await client.post(found.webhook_url, json=webhook_body())
                    signal_id = answer.json()["signal_ids"][0]
                elif signal_id in events[-1] and 'data-status="filled"' in events[-1]:
                    break
    assert "no signals match" in events[0]
    assert signal_id in events[-1]


async def test_dashboard_cancel_cancels_a_working_order_at_the_broker(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    sim = sim_tokens
    settings = dashboard_settings(sim, fresh_db, redis_server.url, tmp_path)
    async with serving(settings) as found, httpx.AsyncClient(timeout=10) as client:
        base = found.http_url
        await login(client, base)
        sent = await client.post(found.webhook_url, json=webhook_body(
            order_type="limit", price=far_below(sim)))  # fmt: skip
        assert sent.status_code == 200, sent.text

        async def resting() -> list[str]:
            return working_orders(sim, FIRST)

        [order_id] = await until(resting, 20, "the limit order to rest")
        page = await client.get(f"{base}/ui/accounts")
        forged = await client.post(f"{base}/ui/accounts/cancel",
                                   data={"account": FIRST, "order_id": order_id,
                                         "csrf": "forged"})  # fmt: skip
        still = working_orders(sim, FIRST)
        cancel = await client.post(f"{base}/ui/accounts/cancel", data={
            "account": FIRST, "order_id": order_id, "csrf": csrf_of(page.text)})  # fmt: skip
        after = await client.get(f"{base}{cancel.headers['location']}")
    assert page.status_code == 200
    assert f'data-cancel="{order_id}"' in page.text
    assert "Token health" in page.text
    assert forged.status_code == 403
    assert still == [order_id]
    assert cancel.status_code == 303, cancel.text
    assert working_orders(sim, FIRST) == []
    assert f"cancel of order {order_id} sent" in after.text


async def test_dashboard_accounts_show_a_position_divergence(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    # This process checks no positions: its first check (the accounts are quiet) would judge
    # the stored divergence explained and replace it before the page is read.
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path,
                                  dispatcher={"position_check_s": 0})  # fmt: skip
    async with logged_in(settings, fresh_db) as dash:
        since = datetime(2026, 12, 6, 14, 30, tzinfo=UTC)
        await dash.ledger.save_position_checks([PositionCheck(
            FIRST, "MNQZ6", Decimal(0), Decimal(3), Decimal(1), accepted_by="baseline",
            diverged_since=since, divergence={"unexplained": "2", "seen": 2},
        )])  # fmt: skip
        page = await dash.client.get(f"{dash.base}/ui/accounts")
    assert page.status_code == 200
    assert 'data-position="diverged"' in page.text
    assert "DIVERGED since 2026-12-06 14:30:00: +2 unexplained" in page.text


async def test_dashboard_kill_switch_asks_to_confirm_then_throws_and_releases(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with logged_in(settings, fresh_db) as dash:
        client, ledger, base = dash.client, dash.ledger, dash.base
        health = await client.get(f"{base}/ui/health")
        csrf = csrf_of(health.text)
        asked = await client.post(f"{base}/ui/kill", data={"csrf": csrf, "reason": "test"})
        on_after_asking = await ledger.kill_switches()
        confirmed = {"csrf": csrf, "reason": "test", "confirm": "yes"}
        thrown = await client.post(f"{base}/ui/kill", data=confirmed)
        on = await client.get(f"{base}{thrown.headers['location']}")
        released = await client.post(f"{base}/ui/resume", data={"csrf": csrf, "confirm": "yes"})
        off = await client.get(f"{base}/ui/health")
        events = await ledger.kill_switches()
    assert 'data-on="no"' in health.text
    assert asked.status_code == 200
    assert "Throw the kill switch for every account?" in asked.text
    assert not on_after_asking.global_on
    assert thrown.status_code == 303
    assert 'data-on="yes"' in on.text
    assert "kill switch thrown" in on.text
    assert released.status_code == 303
    assert 'data-on="no"' in off.text
    assert not events.global_on
    assert events.global_switch is not None
    assert events.global_switch.changed_by == "dashboard 127.0.0.1"


async def test_dashboard_flatten_all_throws_the_switch_and_queues_a_flatten_per_account(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with logged_in(settings, fresh_db) as dash:
        client, ledger, base = dash.client, dash.ledger, dash.base
        csrf = csrf_of((await client.get(f"{base}/ui/health")).text)
        asked = await client.post(f"{base}/ui/flatten", data={"csrf": csrf})
        done = await client.post(f"{base}/ui/flatten", data={"csrf": csrf, "confirm": "yes"})
        rows = await ledger.list_signals(limit=10)
    assert "Flatten every account?" in asked.text
    assert done.status_code == 303
    flattens = [r for r in rows if r.intent == "flatten"]
    assert {r.account_name for r in flattens} == {a.name for a in settings.accounts}


async def test_dashboard_pages_render_no_secret(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    sim = sim_tokens
    tokens = _redis_tokens(redis_server)
    assert tokens, "the simulator's tokens should be in Redis"
    settings = dashboard_settings(sim, fresh_db, redis_server.url, tmp_path)
    secrets = [PASSWORD, SECRET, TOKEN, *tokens]
    async with (
        serving(settings) as found, httpx.AsyncClient(timeout=10) as client,
        await Ledger.connect(fresh_db) as ledger,
    ):  # fmt: skip
        base = found.http_url
        pages = [(await client.get(f"{base}/ui/login")).text]
        pages.append((await login(client, base)).text)
        sent = await client.post(found.webhook_url, json=webhook_body())
        [filled] = sent.json()["signal_ids"]
        await client.post(found.webhook_url, json=webhook_body(quantity=99))  # denied
        limit = await client.post(found.webhook_url, json=webhook_body(
            order_type="limit", price=far_below(sim)))  # fmt: skip
        await until_final(ledger, filled)
        ids = [filled, *limit.json()["signal_ids"]]
        for path in ("/ui/signals", "/ui/signals?since=1d", "/ui/accounts", "/ui/health",
                     "/ui/latency", *(f"/ui/trace/{i}" for i in ids)):  # fmt: skip
            answer = await client.get(f"{base}{path}")
            assert answer.status_code == 200, path
            pages.append(answer.text)
        async with asyncio.timeout(30), client.stream("GET", f"{base}/ui/signals/stream") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    pages.append(line)
                    break
    for page in pages:
        for secret in secrets:
            assert secret not in page
    assert any(filled in page for page in pages)


def _redis_tokens(server: EmbeddedRedis) -> list[str]:
    """Return every access token stored in the Redis of the test (the simulator's users)."""
    client = redis.Redis.from_url(server.url)
    try:
        found = []
        for key in client.scan_iter("token:*"):
            raw = client.get(key)
            if raw is None:
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                found.append(raw.decode())
                continue
            found += [v for k, v in value.items() if k.endswith("ccessToken") and v]
        return found
    finally:
        client.close()


@pytest.mark.parametrize("password", ["pw-8chars", "eleven-char"])
def test_dashboard_password_shorter_than_12_characters_is_refused(password: str) -> None:
    from tradebridge.config import load_settings
    from tradebridge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dashboard\.password: too short") as caught:
        load_settings(dashboard={"password": password})
    assert password not in str(caught.value)


@pytest.mark.parametrize("environment", ["live", "demo"])
async def test_dashboard_pages_say_live_when_orders_trade_real_money(environment: str) -> None:
    from fastapi import FastAPI

    from tradebridge.config import load_settings
    from tradebridge.runtime.dashboard import DashboardDeps, build_dashboard_router

    settings = load_settings(tradovate={"environment": environment},
                             dashboard={"password": PASSWORD})  # fmt: skip
    # The login page reads nothing: the stores are not needed to render it.
    deps = DashboardDeps(settings, None, None, None)  # type: ignore[arg-type]
    app = FastAPI()
    app.include_router(build_dashboard_router(deps))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
        page = await client.get("/ui/login")
    assert page.status_code == 200
    assert ('id="live-banner"' in page.text) is (environment == "live")


async def test_dashboard_health_shows_the_notifications_the_ledger_recorded(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from tradebridge.store.ledger.notifications import SendRecord

    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path)
    async with logged_in(settings, fresh_db) as dash:
        found, client, ledger = dash.found, dash.client, dash.ledger
        empty = await client.get(f"{found.http_url}/ui/health")
        await ledger.record_sends([SendRecord(
            message_id="m-1", key="kill_switch", kind="kill_switch", phase="firing",
            title="Kill switch thrown", body="global", channel="desk (json)", outcome="failed",
            attempts=3, error="HTTP 500 from the receiver, token=abcdefghijklmnop1234",
            ts_queued=datetime.now(UTC),
        )])  # fmt: skip
        shown = await client.get(f"{found.http_url}/ui/health")
    assert "none sent yet" in empty.text
    assert "Kill switch thrown" in shown.text
    assert "desk (json)" in shown.text
    assert 'data-status="failed"' in shown.text
    assert "HTTP 500 from the receiver" in shown.text
    assert "abcdefghijklmnop1234" not in shown.text


async def test_dashboard_escapes_what_a_row_holds_and_links_any_signal_id(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    import re
    from html import unescape

    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path,
                                  dispatcher={"workers": 0})  # fmt: skip
    odd = 'odd/<script>alert("x")</script>?a=1#frag'
    async with logged_in(settings, fresh_db) as dash:
        client, ledger, base = dash.client, dash.ledger, dash.base
        await ledger.insert_signal(signal_id=odd, account_name=FIRST, instrument="MNQ1!",
                                   side="buy", quantity=1, strategy_name="<b>bold</b>")  # fmt: skip
        listed = await client.get(f"{base}/ui/signals")
        [href] = re.findall(r'href="(/ui/trace/[^"]+)"', listed.text)
        trace = await client.get(base + unescape(href))
    assert "<script>" not in listed.text
    assert "<b>bold</b>" not in listed.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in listed.text
    assert trace.status_code == 200, trace.text
    assert "<script>" not in trace.text
    assert "pending" in trace.text
