"""No secret anywhere after a full run (issue 14): an in-process ``serve`` on the simulator
takes alerts carrying the webhook secret (in the body and in the URL path), a wrong secret, the
operator's token on ``/kill`` and ``/resume``, places, rejects and fills orders with the tokens
in Redis; then every log line (ours and the libraries', at DEBUG), every row of every table
of the ledger database, and every page in ``SCANNED_PATHS`` are searched for each secret and
token: zero hits.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from _support.dashboard import login
from _support.fixtures import logs_to
from _support.receivers import HttpReceiver, http_receiver
from _support.runtime import serve_settings, serving, until_final
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

# The pages of the running process that are searched. The dashboard (/ui, branch `dash`)
# adds its pages here once merged, e.g. "/ui/signals", "/ui/signals/{signal_id}",
# "/ui/accounts", "/ui/health", "/ui/latency" ({signal_id}: each signal of the run).
SCANNED_PATHS: list[str] = ["/healthz", "/metrics", "/kill", "/openapi.json"]
# The dashboard's pages, read logged in (``{signal}``: each signal's trace).
DASHBOARD_PATHS: list[str] = [
    "/ui/signals",
    "/ui/trace/{signal}",
    "/ui/accounts",
    "/ui/health",
    "/ui/latency",
    "/ui/assets/app.js",
]
ACCOUNT = "DEMO0000001"


def _hits(text: str, needles: dict[str, str]) -> list[str]:
    return [name for name, value in needles.items() if value and value in text]


def _token_parts(raw: bytes) -> Iterable[tuple[str, str]]:
    """Return the secret parts of a Redis token value: each token, and its signature alone."""
    value = json.loads(raw)
    for field in ("accessToken", "mdAccessToken"):
        token = value.get(field)
        if token:
            yield field, token
            yield f"{field} signature", token.rsplit(".", 1)[-1]


async def _ledger_text(url: str) -> dict[str, str]:
    """Return every row of every table of the database as text, by table."""
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema not in ('pg_catalog', 'information_schema') "
            "and table_type = 'BASE TABLE'"
        )
        out: dict[str, str] = {}
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            rows = await conn.fetch(f"select t::text as row from {name} t")
            out[name] = "\n".join(r["row"] for r in rows)
        return out
    finally:
        await conn.close()


async def test_full_run_leaves_no_secret_in_logs_tables_or_pages(
    monkeypatch: pytest.MonkeyPatch, sim_tokens: SimServer, fresh_db: str,
    redis_server: EmbeddedRedis, tmp_path: Path,
) -> None:  # fmt: skip
    channel_secret = f"ch-{secrets.token_urlsafe(24)}"
    with http_receiver() as receiver:
        # A notification channel whose URL holds a secret (as a webhook token would).
        monkeypatch.setenv(
            "TRADEBRIDGE_NOTIFY_HOOK_URL", f"json://{receiver.host}/{channel_secret}"
        )
        await _full_run(sim_tokens, fresh_db, redis_server, tmp_path, channel_secret, receiver)


async def _full_run(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path,
    channel_secret: str, receiver: HttpReceiver,
) -> None:  # fmt: skip
    webhook_secret = f"wh-{secrets.token_urlsafe(24)}"
    operator_token = f"op-{secrets.token_urlsafe(24)}"
    wrong_secret = f"guess-{secrets.token_urlsafe(16)}"
    dashboard_password = f"dash-{secrets.token_urlsafe(24)}"
    settings = serve_settings(
        sim_tokens, fresh_db, redis_server.url, tmp_path, secret=webhook_secret,
        serve={"operator_token": operator_token}, logging={"level": "DEBUG"},
        dashboard={"password": dashboard_password},
        risk={"max_order_qty": 3},
        notify={"channels": [{"name": "hook"}], "interval_s": 0.1, "rows_window_s": 0},
    )  # fmt: skip
    client_redis = aioredis.Redis.from_url(redis_server.url)
    needles = {"webhook secret": webhook_secret, "operator token": operator_token,
               "a wrong secret": wrong_secret, "channel URL secret": channel_secret,
               "dashboard password": dashboard_password}  # fmt: skip
    for key in await client_redis.keys("token:*"):
        for name, part in _token_parts(await client_redis.get(key)):
            needles[f"{key.decode()} {name}"] = part
    await client_redis.aclose()
    password = unquote(urlsplit(fresh_db).password or "")
    if password:
        needles["database password"] = password
    assert any(name.startswith("token:") for name in needles), "no token was minted"

    pages: dict[str, str] = {}
    with logs_to("DEBUG") as logs:
        async with (
            serving(settings) as found,
            httpx.AsyncClient(timeout=20) as client,
            await Ledger.connect(fresh_db) as ledger,
        ):
            base = found.http_url
            body = {"secret": webhook_secret, "symbol": "MNQ1!", "action": "buy",
                    "account": ACCOUNT}  # fmt: skip
            ids = []
            for n, (url, extra) in enumerate(
                [
                    (f"{base}/webhook", {"quantity": 1}),
                    (f"{base}/webhook/{webhook_secret}", {"quantity": 1, "secret": None}),
                    (f"{base}/webhook", {"quantity": 5}),  # denied by risk: a 400
                ]
            ):
                sent = {k: v for k, v in {**body, **extra, "strategy": f"s{n}"}.items()
                        if v is not None}  # fmt: skip
                answer = await client.post(url, json=sent)
                if answer.status_code == 200:
                    ids.extend(answer.json()["signal_ids"])
            assert len(ids) == 2
            wrong = await client.post(f"{base}/webhook/{wrong_secret}", json=body)
            assert wrong.status_code == 401
            sim_tokens.ctx.faults.inject_failure_reason = "AccountClosed"
            sim_tokens.ctx.faults.inject_failure_count = 1
            answer = await client.post(f"{base}/webhook", json={**body, "quantity": 2})
            ids.extend(answer.json()["signal_ids"])
            for signal_id in ids:
                await until_final(ledger, signal_id)
            bearer = {"Authorization": f"Bearer {operator_token}"}
            guessed = {"Authorization": f"Bearer {wrong_secret}"}
            refused = await client.post(f"{base}/kill", json={}, headers=guessed)
            assert refused.status_code == 401
            assert (await client.post(f"{base}/kill", json={}, headers=bearer)).status_code == 200
            assert (await client.post(f"{base}/resume", json={}, headers=bearer)).status_code == 200
            # The rejection's notice went out through the channel.
            await receiver.until(1)
            for path in SCANNED_PATHS:
                page = await client.get(f"{base}{path}", headers=bearer)
                assert page.status_code == 200, (path, page.text[:200])
                pages[path] = page.text
            pages["/ui/login"] = (await client.get(f"{base}/ui/login")).text
            wrong_login = await login(client, base, password=wrong_secret)
            assert wrong_login.status_code != 303, wrong_login.status_code
            assert (await login(client, base, password=dashboard_password)).status_code == 303
            for path in DASHBOARD_PATHS:
                for signal_id in ids if "{signal}" in path else [""]:
                    url = path.replace("{signal}", signal_id)
                    page = await client.get(f"{base}{url}")
                    assert page.status_code == 200, (url, page.text[:200])
                    assert "Log out" in page.text or url.endswith(".js"), url
                    pages[url] = page.text
        statuses = sorted([(await ledger_status(fresh_db, s)) for s in ids])
    tables = await _ledger_text(fresh_db)

    assert statuses == ["filled", "filled", "rejected"]
    lines = logs.getvalue().splitlines()
    events = {json.loads(line)["event"] for line in lines if line.startswith("{")}
    # The lines that would carry a secret if anything did: refusals, calls, the operator's.
    assert {"webhook alert refused", "webhook alert stored", "broker_call",
            "kill_switch_thrown", "kill_switch_released"} <= events, events  # fmt: skip
    assert any("broker_call" in line and "answer" in line for line in lines)  # DEBUG bodies
    assert any("webhook_alerts" in t for t in tables)
    leaks = {
        **{f"log line {n}": _hits(line, needles) for n, line in enumerate(lines)},
        **{f"table {name}": _hits(text, needles) for name, text in tables.items()},
        **{f"page {path}": _hits(text, needles) for path, text in pages.items()},
    }
    assert {where: what for where, what in leaks.items() if what} == {}


async def ledger_status(url: str, signal_id: str) -> str:
    """Return the status of a row (after the run)."""
    async with await Ledger.connect(url) as ledger:
        row = await ledger.get(signal_id)
    assert row is not None
    return row.status.value
