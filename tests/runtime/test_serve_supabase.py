"""The documented ``tradebridge`` role of ``supabase/tradebridge.sql`` works for every path the
bridge uses (issue 10, item 5): webhook intake storing alerts, workers, reconcile and the
tracker in ``serve``, ``db migrate``, and the CLI (``send``, ``review``).

The database is set up as Supabase sets up a project (tests/_support/supabase.py): with
Supabase's default privileges and without the SQL's ownership of ``webhook_alerts``, the
role was refused that table and every webhook alert was answered 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from _support.database import fresh_database
from _support.runtime import serve_settings, serving, until_final
from _support.supabase import as_tradebridge, set_up_supabase
from tradebridge.cli.main import app
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis
from tradebridge.store.ledger import Ledger
from tradebridge.store.migrate import migrate

WEBHOOK_SECRET = "serve-supabase-webhook-secret"


@pytest.fixture
async def supabase_url(postgres_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """Return the URL, as the ``tradebridge`` role, of a Supabase-like migrated database."""
    async with fresh_database(postgres_server.url, prefix="sb", migrated=False) as url:
        await set_up_supabase(url)
        yield as_tradebridge(url)


async def _cli(*argv: str) -> str:
    # The commands run their own event loop: give them a thread without one.
    env = {"TRADEBRIDGE_CONFIG": "", "DATABASE_URL": ""}
    result = await asyncio.to_thread(
        CliRunner().invoke, app, list(argv), env=env, terminal_width=200
    )
    assert result.exit_code == 0, result.output
    return str(result.output)


async def test_serve_as_tradebridge_role_on_supabase_takes_webhook_alerts_and_places_them(
    sim_tokens: SimServer, supabase_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = serve_settings(
        sim_tokens, supabase_url, redis_server.url, tmp_path, secret=WEBHOOK_SECRET,
        dispatcher={"reconcile_interval_s": 0.5},
    )  # fmt: skip
    body = {"secret": WEBHOOK_SECRET, "symbol": "MNQ1!", "action": "buy", "quantity": 1,
            "account": "DEMO0000001"}  # fmt: skip
    async with serving(settings) as found, httpx.AsyncClient() as client:
        answer = await client.post(found.webhook_url, json=body)
        again = await client.post(found.webhook_url, json=body)
        assert answer.status_code == 200, answer.text
        (signal_id,) = answer.json()["signal_ids"]
        async with await Ledger.connect(supabase_url) as ledger:
            row = await until_final(ledger, signal_id)
            sent = await _cli(
                "send", "sell", "MNQ1!", "1", "--account", "DEMO0000001",
                "--signal-id", "cli-1", "--wait", "--database-url", supabase_url,
            )  # fmt: skip
        health = (await client.get(found.healthz_url)).json()
    listed = await _cli("review", "list", "--database-url", supabase_url)
    states = await migrate(supabase_url)

    assert row.status.value == "filled"
    assert again.status_code == 200, again.text
    assert "cli-1" in sent
    assert "filled" in sent
    assert health["checks"]["database"]["ok"] is True
    assert health["checks"]["workers"]["level"] == "ok"  # claims and reconcile rounds too
    assert listed.strip()
    assert all(s.is_applied and not s.applied_now for s in states)
