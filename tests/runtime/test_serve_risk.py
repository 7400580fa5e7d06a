"""Each account's risk standing as ``serve`` shows it (issue 13): the start log and the banner,
``/healthz``'s ``risk`` check and ``/metrics``; an in-process ``serve`` on the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.runtime import serve_settings, serving, until_final
from tradebridge.cli.run import _print_banner
from tradebridge.runtime.endpoints import Endpoints
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.ledger import Ledger

SECRET = "risk-standing-test-webhook-secret"
FIRST, SECOND = "DEMO0000001", "DEMO0000002"


async def test_healthz_metrics_and_banner_show_each_accounts_standing(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    risk = {"trading_hours": "always", "daily_loss_limit": 900, "max_orders_per_day": 50}
    settings = serve_settings(sim_tokens, fresh_db, redis_server.url, tmp_path, secret=SECRET,
                              risk=risk)  # fmt: skip
    async with (
        serving(settings) as found, httpx.AsyncClient(timeout=10) as client,
        await Ledger.connect(fresh_db) as ledger,
    ):  # fmt: skip
        await ledger.insert_signal(signal_id="one", account_name=FIRST, instrument="MNQ1!",
                                   side="buy", quantity=1)  # fmt: skip
        row = await until_final(ledger, "one")
        health = (await client.get(found.healthz_url)).json()
        scraped = (await client.get(found.metrics_url)).text

    assert row.status.value == "filled"
    banner = dict(found.risk)
    assert banner[FIRST] == (
        "P&L not read yet today; max_orders_per_day 50 left; max_open_orders 20 left"
    )
    check: dict[str, Any] = health["checks"]["risk"]
    assert check["level"] == "ok"
    first = check["accounts"][FIRST]
    assert first["orders_today"] == 1
    assert first["day_pnl"] is not None  # the entry's check read the balance
    assert first["limits"]["daily_loss_limit"]["reached"] is False
    assert first["limits"]["max_orders_per_day"]["room"] == "49"
    assert check["accounts"][SECOND]["day_pnl"] is None
    assert f'tradebridge_risk_room{{account="{FIRST}",rule="max_orders_per_day"}} 49.0' in scraped
    assert f'tradebridge_risk_limit_reached{{account="{FIRST}",rule="daily_loss_limit"}} 0.0' in (
        scraped
    )


@pytest.mark.parametrize("accounts", [1, 12])
def test_up_banner_shows_a_line_per_account_at_most_ten(
    capsys: pytest.CaptureFixture[str], accounts: int
) -> None:
    names = [f"DEMO{n:07d}" for n in range(1, accounts + 1)]
    found = Endpoints(
        http_url="http://127.0.0.1:8080",
        database_url="postgresql://postgres:pw@127.0.0.1:5432/x",
        redis_url="redis://127.0.0.1:6379/0",
        data_dir=Path("/tmp/x"),
        webhook_secret_file=Path("/tmp/x/webhook_secret"),
        accounts=tuple(names),
        risk=tuple((name, "P&L +0.00; max_orders_per_day 300 left") for name in names),
    )

    _print_banner(found)
    text = capsys.readouterr().out

    assert f"  risk         {names[0]}: P&L +0.00; max_orders_per_day 300 left" in text
    assert text.count("max_orders_per_day 300 left") == min(accounts, 10)
    assert ("and 2 more accounts (/healthz)" in text) == (accounts == 12)
    assert "risk" not in found.as_json()
