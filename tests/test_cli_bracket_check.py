"""The CLI checks a bracket against the market (issue 9, item 5), on the real simulator.

``tradebridge order`` and ``tradebridge send`` read a quote (the bridge's ``/quotes``, for
native and bridge accounts alike) and refuse, with exit 2 and the numbers, a stop loss on
the wrong side of the market or a take profit the market is already through; ``--force``
sends it anyway. The market is moved with ``tradebridge sim price``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from typer.testing import CliRunner

import store.conftest as store_fixtures
from test_cli_broker import ACCOUNT, _front
from tradebridge.cli.main import app
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import SimOrder
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis

pytestmark = pytest.mark.usefixtures("restore_logging")
# The fresh-database fixtures of the store tests, shared rather than copied.
empty_db = store_fixtures.empty_db
ledger_db = store_fixtures.ledger_db

MARKET = Decimal(20970)  # bid; the simulator's ask is one tick above


@pytest.fixture
def sim() -> Iterator[SimServer]:
    """A simulator whose price moves only when told."""
    with SimServer(SimConfig(port=0, price_step_s=3600)) as server:
        yield server


def _token(sim: SimServer, dialect: str) -> str:
    if dialect == "native":
        data = httpx.post(sim.url + "/v1/auth/accesstokenrequest", json={
            "name": "demo", "password": "demo", "appId": "tests", "appVersion": "1",
            "cid": 1, "sec": "tests", "deviceId": "cli-tests",
        }).json()  # fmt: skip
        return json.dumps({"kind": "native", "env": "demo", "accessToken": data["accessToken"],
                           "expirationTime": data["expirationTime"]})  # fmt: skip
    data = httpx.post(sim.url + "/authorize", data={"login": "demo", "password": "demo"}).json()
    expires = datetime.fromtimestamp(data["d"]["expiration"], UTC).isoformat()
    return json.dumps({"kind": "tv", "env": "demo", "expirationTime": expires,
                       "accessToken": data["d"]["access_token"]})  # fmt: skip


@pytest.fixture(params=["native", "tvbridge"])
def config(
    request: pytest.FixtureRequest, sim: SimServer, redis_server: EmbeddedRedis, tmp_path: Path
) -> Path:
    """A settings file for one account of the parameter's dialect, its token in Redis."""
    dialect = request.param
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.set(f"token:{ACCOUNT}", _token(sim, dialect))
    client.close()
    path = tmp_path / "tradebridge.toml"
    path.write_text(
        f'[[accounts]]\nname = "{ACCOUNT}"\ndialect = "{dialect}"\n\n'
        f'[tradovate]\nnative_url = "{sim.url}/v1"\nbridge_url = "{sim.url}"\n\n'
        f'[redis]\nurl = "{redis_server.url}"\n'
    )
    _invoke("sim", "price", _front(), str(MARKET), "--url", sim.url)
    return path


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args), env={"TRADEBRIDGE_CONFIG": "", "REDIS_URL": ""})
    if args[0] == "sim":
        assert result.exit_code == 0, result.output
    return result


def _order(config: Path, side: str, *args: str) -> Any:
    return _invoke("order", side, "MNQ1!", "1", "--account", ACCOUNT, "--config", str(config),
                   *args)  # fmt: skip


def _orders(sim: SimServer) -> list[SimOrder]:
    return sim.call(lambda: sim.ctx.engine.orders(100001))


THROUGH = [
    ("buy", ("--sl", "21000"), "the stop loss 21000 is not below the market (bid 20970"),
    ("buy", ("--sl", "20970"), "the stop loss 20970 is not below the market (bid 20970"),
    ("buy", ("--tp", "20900"), "the take profit 20900 is not above the market (bid 20970"),
    ("sell", ("--sl", "20960"), "the stop loss 20960 is not above the market (ask 20970.25"),
    ("sell", ("--tp", "21000"), "the take profit 21000 is not below the market (ask 20970.25"),
    ("buy", ("--limit", "20900", "--sl", "20950"),
     "the stop loss 20950 is not below the entry's limit price 20900"),
    ("sell", ("--stop", "20900", "--tp", "20950"),
     "the take profit 20950 is not below the entry's stop price 20900"),
]  # fmt: skip


@pytest.mark.parametrize(("side", "args", "message"), THROUGH)
def test_cli_order_bracket_through_the_market_exit_2_with_the_numbers_nothing_sent(
    config: Path, sim: SimServer, side: str, args: tuple[str, ...], message: str
) -> None:
    result = _order(config, side, *args)

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "--force" in result.stderr
    assert _orders(sim) == []


def test_cli_order_bracket_through_the_market_with_force_is_sent(
    config: Path, sim: SimServer
) -> None:
    result = _order(config, "buy", "--sl", "21000", "--tp", "21100", "--force")

    assert result.exit_code == 0, result.output
    entries = [o for o in _orders(sim) if o.parent_id is None]
    legs = [o for o in _orders(sim) if o.parent_id is not None]
    assert len(entries) == 1
    assert sorted(o.version.stop_price or o.version.price for o in legs) == [21000, 21100]


@pytest.mark.parametrize(
    ("side", "args"),
    [
        ("buy", ("--sl", "20900", "--tp", "21050")),
        ("sell", ("--sl", "21050", "--tp", "20900")),
        ("buy", ("--limit", "20900", "--sl", "20850", "--tp", "20950")),
    ],
)
def test_cli_order_bracket_on_the_right_sides_of_the_market_is_sent(
    config: Path, sim: SimServer, side: str, args: tuple[str, ...]
) -> None:
    result = _order(config, side, *args)

    assert result.exit_code == 0, result.output
    assert len([o for o in _orders(sim) if o.parent_id is not None]) == 2


def test_cli_order_bracket_follows_a_moved_market(config: Path, sim: SimServer) -> None:
    assert _order(config, "buy", "--sl", "20990").exit_code == 2
    _invoke("sim", "price", _front(), "21000", "--url", sim.url)

    result = _order(config, "buy", "--sl", "20990")

    assert result.exit_code == 0, result.output


async def _send(config: Path, database: str, *args: str) -> Any:
    # In a thread: the command runs its own event loop.
    return await asyncio.to_thread(
        _invoke, "send", "buy", "MNQ1!", "1", "--account", ACCOUNT, "--config", str(config),
        "--database-url", database, *args,
    )  # fmt: skip


async def _rows(database: str) -> list[asyncpg.Record]:
    db = await asyncpg.connect(database)
    try:
        return await db.fetch("select signal_id, stop_loss from trading_signals")
    finally:
        await db.close()


async def test_cli_send_bracket_through_the_market_exit_2_nothing_inserted(
    config: Path, ledger_db: str
) -> None:
    refused = await _send(config, ledger_db, "--sl", "21000")
    assert refused.exit_code == 2, refused.output
    assert "the stop loss 21000 is not below the market (bid 20970" in refused.stderr
    assert await _rows(ledger_db) == []

    forced = await _send(config, ledger_db, "--sl", "21000", "--force")
    fine = await _send(config, ledger_db, "--sl", "20900")

    assert (forced.exit_code, fine.exit_code) == (0, 0), forced.output + fine.output
    assert sorted(r["stop_loss"] for r in await _rows(ledger_db)) == [20900, 21000]


async def test_cli_send_quote_unreadable_exit_1_says_force_skips_the_check(
    config: Path, ledger_db: str, sim: SimServer
) -> None:
    sim.stop()

    result = await _send(config, ledger_db, "--sl", "20900")

    assert result.exit_code == 1, result.output
    assert "could not read a quote" in result.stderr
    assert "--force" in result.stderr
    assert await _rows(ledger_db) == []
