"""``tradebridge flatten``: one contract, a whole account, every account (``--all``), and an
account already flat says so; against the simulator and a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from typer.testing import CliRunner

from tradebridge.cli.main import app
from tradebridge.domain.contracts import resolve_symbol
from tradebridge.sim.config import SimConfig
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis

FIRST, SECOND = "DEMO0000001", "DEMO0000002"
IDS = {FIRST: 100001, SECOND: 100002}

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(port=0)) as server:
        yield server


@pytest.fixture
def env(sim: SimServer, redis_server: EmbeddedRedis, tmp_path: Path) -> dict[str, str]:
    """Both accounts of the simulator's demo user configured (native), its token in Redis."""
    login = {"name": "demo", "password": "demo", "appId": "t", "appVersion": "1", "cid": 1,
             "sec": "sim", "deviceId": "test"}  # fmt: skip
    data = httpx.post(sim.url + "/v1/auth/accesstokenrequest", json=login).json()
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    for name in IDS:
        token = {"kind": "native", "env": "demo", "accessToken": data["accessToken"],
                 "expirationTime": data["expirationTime"]}  # fmt: skip
        client.set(f"token:{name}", json.dumps(token))
    client.close()
    config = tmp_path / "tradebridge.toml"
    config.write_text("".join(f'[[accounts]]\nname = "{name}"\n' for name in IDS))
    return {"config": str(config), "native": sim.url + "/v1", "redis": redis_server.url}


def _cli(env: dict[str, str], *args: str) -> Any:
    options = ["--config", env["config"], "--native-url", env["native"], "--redis-url",
               env["redis"]]  # fmt: skip
    return CliRunner().invoke(
        app, [*args, *options], env={"TRADEBRIDGE_CONFIG": "", "REDIS_URL": ""},
        terminal_width=200,
    )  # fmt: skip


def _front(root: str = "MNQ") -> str:
    return resolve_symbol(f"{root}1!", datetime.now(UTC).date()).name


def _far_below(sim: SimServer, root: str) -> str:
    def read() -> Decimal:
        contract = sim.ctx.engine.find_contract(_front(root))
        assert contract is not None
        return sim.ctx.engine.quote(contract.id).last

    last = sim.call(read)
    return str((last * Decimal("0.9") / Decimal("0.25")).to_integral_value() * Decimal("0.25"))


def _open(sim: SimServer, account: str) -> list[tuple[str, int]]:
    """Return (contract, net) of the account's open positions at the simulator."""

    def read() -> list[tuple[str, int]]:
        found = []
        for p in sim.ctx.engine.positions(IDS[account]):
            contract = sim.ctx.engine.contract(p.contract_id)
            if p.net_pos and contract is not None:
                found.append((contract.name, int(p.net_pos)))
        return found

    return sim.call(read)


def _working(sim: SimServer, account: str) -> int:
    return sim.call(lambda: sum(1 for o in sim.ctx.engine.orders(IDS[account])
                                if o.ord_status.value == "Working"))  # fmt: skip


def test_flatten_already_flat_account_says_so(env: dict[str, str]) -> None:
    result = _cli(env, "flatten", "MNQ1!", "--account", FIRST)

    assert result.exit_code == 0, result.output
    assert "already flat" in result.stdout
    assert "position closed" not in result.stdout


def test_flatten_contract_with_a_position_says_what_it_closed(
    env: dict[str, str], sim: SimServer
) -> None:
    assert _cli(env, "order", "buy", "MNQ1!", "2", "--account", FIRST).exit_code == 0

    result = _cli(env, "flatten", "MNQ1!", "--account", FIRST)

    assert result.exit_code == 0, result.output
    assert f"{_front()} position +2 closed" in result.stdout
    assert _open(sim, FIRST) == []


def test_flatten_account_without_a_symbol_closes_every_contract_and_order(
    env: dict[str, str], sim: SimServer
) -> None:
    assert _cli(env, "order", "buy", "MNQ1!", "1", "--account", FIRST).exit_code == 0
    limit = _far_below(sim, "MES")
    resting = _cli(env, "order", "buy", "MES1!", "1", "--limit", limit, "--account", FIRST)
    assert resting.exit_code == 0, resting.output
    assert _working(sim, FIRST) == 1

    result = _cli(env, "flatten", "--account", FIRST, "--json")

    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["account"] == FIRST
    assert {c["contract"] for c in report["contracts"]} == {_front("MNQ"), _front("MES")}
    assert _open(sim, FIRST) == []
    assert _working(sim, FIRST) == 0


def test_flatten_all_flattens_every_configured_account_and_names_the_flat_ones(
    env: dict[str, str], sim: SimServer
) -> None:
    assert _cli(env, "order", "sell", "MNQ1!", "3", "--account", FIRST).exit_code == 0

    result = _cli(env, "flatten", "--all")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith(FIRST) and "position -3 closed" in line for line in lines), lines
    assert any(line.startswith(SECOND) and "already flat" in line for line in lines), lines
    assert _open(sim, FIRST) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("flatten",), "--account"),
        (("flatten", "--all", "--account", FIRST), "not both"),
    ],
)
def test_flatten_without_a_target_or_with_two_is_exit_2(
    env: dict[str, str], args: tuple[str, ...], words: str
) -> None:
    result = _cli(env, *args)

    assert result.exit_code == 2, result.output
    assert words in result.stderr
