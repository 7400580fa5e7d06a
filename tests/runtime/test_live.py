"""Live is deliberate: without ``tradovate.confirm_live`` nothing starts on live; with it, the
banner, the serving log line, ``/healthz`` and ``/metrics`` say LIVE plainly."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from typer.testing import CliRunner

from _support.runtime import NO_SETTINGS, TRADEBRIDGE, child_env, serve_settings, serving
from tradebridge.cli.main import app
from tradebridge.cli.run import _print_banner
from tradebridge.config import load_settings
from tradebridge.errors import ConfigError
from tradebridge.runtime.endpoints import Endpoints
from tradebridge.runtime.serve import Stores, run_serve, serve_stack
from tradebridge.runtime.up import run_up
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis

LIVE = {"environment": "live"}
REFUSAL = r"tradovate\.confirm_live is not true but tradovate\.environment is \"live\""
# The risk rails a live account must have defined (docs/risk.md).
RAILS = {"allowed_roots": ["MNQ"], "daily_loss_limit": 1000, "trailing_drawdown": "off"}


pytestmark = pytest.mark.usefixtures("restore_logging")


def _live(tmp_path: Path, risk: dict[str, Any] | None = None, **tradovate: Any) -> Any:
    return load_settings(
        data_dir=tmp_path / "data",
        serve={"port": 0},
        webhook={"secret": "live-test-webhook-secret"},
        tradovate={**LIVE, **tradovate},
        accounts=[{"name": "LIVE1"}, {"name": "LIVE2", "risk": RAILS}],
        risk=risk or {},
    )


async def test_serve_live_without_confirmation_refuses_before_starting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=REFUSAL):
        await run_serve(_live(tmp_path), stop=asyncio.Event())
    assert not (tmp_path / "data").exists()  # no store was started


async def test_up_live_without_confirmation_refuses_before_starting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=REFUSAL):
        await run_up(_live(tmp_path), sim_port=0, stop=asyncio.Event())
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("risk", "missing"),
    [
        ({}, "LIVE1: allowed_roots, daily_loss_limit, trailing_drawdown"),
        ({"daily_loss_limit": "off", "trailing_drawdown": 2500}, "LIVE1: allowed_roots"),
    ],
)
async def test_serve_live_with_a_rail_undefined_refuses_naming_account_and_rail(
    tmp_path: Path, risk: dict[str, Any], missing: str
) -> None:
    settings = _live(tmp_path, risk, confirm_live=True)

    with pytest.raises(ConfigError, match="live accounts need every risk rail defined") as e:
        await run_serve(settings, stop=asyncio.Event())

    assert f"these are not: {missing}. Set each" in str(e.value)
    assert "LIVE2" not in str(e.value)  # its own risk table defines them
    assert not (tmp_path / "data").exists()  # no store was started


async def test_workers_live_without_confirmation_refuse_whoever_starts_them(
    tmp_path: Path,
) -> None:
    # serve_stack is where the dispatchers start; it refuses before it connects anywhere.
    stores = Stores(
        settings=_live(tmp_path),
        database_url="postgresql://nobody@127.0.0.1:1/none",
        redis_url="redis://127.0.0.1:1/0",
        embedded_database=False,
        embedded_redis=False,
    )
    with pytest.raises(ConfigError, match=REFUSAL):
        await serve_stack(stores, stop=asyncio.Event())


def test_cli_serve_live_without_confirmation_exit_2_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("TRADEBRIDGE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRADEBRIDGE_TRADOVATE__ENVIRONMENT", "live")
    monkeypatch.setenv("TRADEBRIDGE_WEBHOOK__SECRET", "live-test-webhook-secret")

    result = CliRunner().invoke(app, ["serve", "--port", "0", "--data-dir", str(tmp_path / "d")])

    assert result.exit_code == 2, result.output
    assert "tradovate.confirm_live is not true" in result.output
    assert "TRADEBRIDGE_TRADOVATE__CONFIRM_LIVE=true" in result.output
    assert not (tmp_path / "d").exists()


def test_up_command_live_without_confirmation_exit_2(tmp_path: Path) -> None:
    # The real command, as a user runs it: one line naming the setting, no traceback.
    env = child_env({**NO_SETTINGS, "TRADEBRIDGE_TRADOVATE__ENVIRONMENT": "live"})
    done = subprocess.run(
        [TRADEBRIDGE, "up", "--data-dir", str(tmp_path / "d"), "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 2, done.stderr
    assert "tradovate.confirm_live is not true" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("live", [False, True])
def test_up_banner_says_the_environment(capsys: pytest.CaptureFixture[str], live: bool) -> None:
    found = Endpoints(
        http_url="http://127.0.0.1:8080",
        database_url="postgresql://postgres:pw@127.0.0.1:5432/x",
        redis_url="redis://127.0.0.1:6379/0",
        simulator_url="http://127.0.0.1:8765",
        data_dir=Path("/tmp/x"),
        webhook_secret_file=Path("/tmp/x/webhook_secret"),
        accounts=("DEMO0000001",),
    )

    _print_banner(found, live=live)
    text = capsys.readouterr().out

    if live:
        assert "LIVE: tradovate.environment is live, orders trade real money" in text
        assert "  environment  LIVE (real money)" in text
    else:
        assert "LIVE" not in text
        assert "  environment  demo" in text


@pytest.mark.parametrize(
    ("tradovate", "environment", "gauge"),
    [({}, "demo", "0.0"), ({**LIVE, "confirm_live": True}, "live", "1.0")],
)
async def test_serve_healthz_metrics_and_log_say_the_environment(
    sim_tokens: SimServer,
    fresh_db: str,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    tradovate: dict[str, Any],
    environment: str,
    gauge: str,
) -> None:
    # The simulator stands in for live's hosts: only the settings say live.
    settings = serve_settings(
        sim_tokens, fresh_db, redis_server.url, tmp_path, secret="live-test-webhook-secret",
        tradovate=tradovate, risk=RAILS,
    )  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        async with serving(settings) as found, httpx.AsyncClient() as client:
            health = await client.get(found.healthz_url)
            metrics = await client.get(found.metrics_url)

    body = health.json()
    assert (body["environment"], body["live"]) == (environment, environment == "live")
    assert f"tradebridge_live {gauge}" in metrics.text
    serving_line = next(e for e in logs if e["event"] == "tradebridge serving")
    assert serving_line["environment"] == ("LIVE" if environment == "live" else "demo")
    warned = [e for e in logs if e["event"].startswith("LIVE:")]
    assert len(warned) == (environment == "live")
