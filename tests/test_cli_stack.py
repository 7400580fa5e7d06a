"""The broker commands find a running ``up`` stack, and their dialect is said, not guessed.

A stack is found through the ``endpoints.json`` that ``up`` writes in its data directory;
here that file is written by the test for an in-process simulator and the session Redis
(its ``pid`` is this live process), which is all the commands read of it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner, Result

from tradebridge.cli.main import app
from tradebridge.sim.config import SimConfig
from tradebridge.sim.seed import TokenSeeder
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis, free_port

ACCOUNT = "DEMO0000001"
# Nothing of the user's environment (None unsets): each test says what it sets.
CLEAN: dict[str, str | None] = {
    "TRADEBRIDGE_CONFIG": None,
    "DATABASE_URL": None,
    "REDIS_URL": None,
    "TRADEBRIDGE_TRADOVATE__ENVIRONMENT": None,
    "TRADEBRIDGE_TRADOVATE__NATIVE_URL": None,
    "TRADEBRIDGE_TRADOVATE__BRIDGE_URL": None,
}


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with SimServer(SimConfig(port=0)) as server:
        yield server


@pytest.fixture
def redis_url(sim: SimServer, redis_server: EmbeddedRedis) -> str:
    """Write the simulator users' tokens to the (emptied) session Redis, as ``up`` does."""

    async def seed() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.flushdb()
            await TokenSeeder(sim.ctx, client).seed()  # once, before any traffic
        finally:
            await client.aclose()

    asyncio.run(seed())
    return redis_server.url


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory: no tradebridge.toml, the default data dir ``.tradebridge``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _stack(data_dir: Path, sim: SimServer, redis_url: str) -> Path:
    """Write the endpoints.json of a running ``up`` stack in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    found = {
        "pid": os.getpid(),
        "simulator_url": sim.url,
        "simulator_native_url": f"{sim.url}/v1",
        "redis_url": redis_url,
        "database_url": "postgresql://postgres:pw@127.0.0.1:1/postgres",
        "accounts": [ACCOUNT],
    }
    (data_dir / "endpoints.json").write_text(json.dumps(found))
    return data_dir


def _closed(scheme: str = "redis") -> str:
    return f"{scheme}://127.0.0.1:{free_port()}" + ("/0" if scheme == "redis" else "/v1")


def _cli(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={**CLEAN, **(env or {})})


def _rows(result: Result) -> dict[str, dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return {r["name"]: r for r in json.loads(result.stdout)}


def test_broker_commands_data_dir_talk_to_the_stack_simulator_and_redis(
    workdir: Path, sim: SimServer, redis_url: str
) -> None:
    stack = str(_stack(workdir / "elsewhere", sim, redis_url))

    listed = _cli("accounts", "--data-dir", stack, "--json")
    orders = _cli("orders", "--account", ACCOUNT, "--data-dir", stack, "--json")

    assert _rows(listed)[ACCOUNT]["native_id"] == 100001
    assert orders.exit_code == 0, orders.output
    assert json.loads(orders.stdout) == []


def test_broker_commands_without_settings_find_the_default_data_dir_stack(
    workdir: Path, sim: SimServer, redis_url: str
) -> None:
    _stack(workdir / ".tradebridge", sim, redis_url)

    rows = _rows(_cli("accounts", "--json"))

    assert rows[ACCOUNT]["dialect"] == "native"
    assert rows[ACCOUNT]["native_id"] == 100001


@pytest.mark.parametrize(
    "named",
    [
        {"REDIS_URL": "closed"},  # the environment names Redis
        {"--redis-url": "closed"},  # an option does
        {"toml": '[redis]\nurl = "closed"\n[[accounts]]\nname = "X"\n'},  # the settings do
    ],
    ids=["env", "option", "settings"],
)
def test_default_data_dir_stack_not_used_when_anything_names_a_store_or_broker(
    workdir: Path, sim: SimServer, redis_url: str, named: dict[str, str]
) -> None:
    _stack(workdir / ".tradebridge", sim, redis_url)
    closed = _closed()
    env: dict[str, str | None] = {}
    args = ["accounts", "--json"]
    if "REDIS_URL" in named:
        env["REDIS_URL"] = closed
    if "--redis-url" in named:
        args += ["--redis-url", closed]
    if "toml" in named:
        (workdir / "tradebridge.toml").write_text(named["toml"].replace("closed", closed))

    result = _cli(*args, env=env)

    assert result.exit_code == 1, result.output
    assert f"cannot connect to Redis at {closed}" in result.stderr  # not the stack's


def test_explicit_data_dir_wins_over_environment_but_not_over_url_options(
    workdir: Path, sim: SimServer, redis_url: str
) -> None:
    stack = str(_stack(workdir / "stack", sim, redis_url))
    closed = _closed()
    stray: dict[str, str | None] = {
        "REDIS_URL": closed,
        "TRADEBRIDGE_TRADOVATE__NATIVE_URL": _closed("http"),
    }

    over_env = _cli("accounts", "--data-dir", stack, "--json", env=stray)
    under_option = _cli("accounts", "--data-dir", stack, "--redis-url", closed)

    assert ACCOUNT in _rows(over_env)
    assert under_option.exit_code == 1
    assert f"cannot connect to Redis at {closed}" in under_option.stderr


def test_data_dir_without_running_stack_exit_2_says_how_to_start_one(workdir: Path) -> None:
    result = _cli("orders", "--account", ACCOUNT, "--data-dir", str(workdir / "none"))

    assert result.exit_code == 2
    assert "no `up` stack runs in" in result.stderr
    assert f"tradebridge up --data-dir {workdir / 'none'}" in result.stderr


def test_dialect_option_chooses_bridge_default_native(
    workdir: Path, sim: SimServer, redis_url: str
) -> None:
    stack = str(_stack(workdir / "stack", sim, redis_url))

    native = _rows(_cli("accounts", "--data-dir", stack, "--json"))[ACCOUNT]
    bridge = _rows(_cli("accounts", "--data-dir", stack, "--dialect", "tvbridge", "--json"))

    assert (native["dialect"], native["native_id"]) == ("native", 100001)
    assert (bridge[ACCOUNT]["dialect"], bridge[ACCOUNT]["bridge_id"]) == ("tvbridge", "D100001")


def test_dialect_not_switched_by_a_stray_bridge_url_variable(
    workdir: Path, sim: SimServer, redis_url: str
) -> None:
    (workdir / "tradebridge.toml").write_text(
        f'[tradovate]\nnative_url = "{sim.url}/v1"\n[redis]\nurl = "{redis_url}"\n'
    )
    stray: dict[str, str | None] = {"TRADEBRIDGE_TRADOVATE__BRIDGE_URL": sim.url}

    rows = _rows(_cli("accounts", "--account", ACCOUNT, "--json", env=stray))

    assert rows[ACCOUNT]["dialect"] == "native"


def test_dialect_defaults_to_the_configured_account_and_the_option_overrides_it(
    workdir: Path, sim: SimServer, redis_url: str
) -> None:
    (workdir / "tradebridge.toml").write_text(
        f'[tradovate]\nnative_url = "{sim.url}/v1"\nbridge_url = "{sim.url}"\n'
        f'[redis]\nurl = "{redis_url}"\n'
        f'[[accounts]]\nname = "{ACCOUNT}"\ndialect = "tvbridge"\n'
    )

    configured = _rows(_cli("accounts", "--account", ACCOUNT, "--json"))
    overridden = _rows(_cli("accounts", "--account", ACCOUNT, "--dialect", "native", "--json"))

    assert configured[ACCOUNT]["dialect"] == "tvbridge"
    assert overridden[ACCOUNT]["dialect"] == "native"


def test_native_url_without_v1_gets_it_with_a_warning(
    workdir: Path, sim: SimServer, redis_url: str
) -> None:
    result = _cli(
        "orders", "--account", ACCOUNT, "--native-url", sim.url, "--redis-url", redis_url,
        "--json",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    assert f"native_url {sim.url} has no path: using {sim.url}/v1" in result.stderr


def test_broker_help_says_where_urls_and_dialect_come_from() -> None:
    result = CliRunner().invoke(app, ["orders", "--help"], terminal_width=200)

    assert result.exit_code == 0
    for words in (
        "--data-dir",
        "--dialect",
        "endpoints.json",
        "REDIS_URL",
        "native|tvbridge",
        "[[accounts]]",
        "[redis] url",
    ):
        assert words in result.stdout
