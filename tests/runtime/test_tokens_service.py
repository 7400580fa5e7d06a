"""``tradebridge tokens serve``: the token service, as a process and as a cron job (``--once``).

alice (native, two accounts) and bob (TradingView bridge) are the simulator's users; their
passwords reach the service only through the 0600 secrets file beside the TOML file.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from typer.testing import CliRunner

import tradebridge
from _support.runtime import NO_SETTINGS, Proc, wait_for
from _support.users import ALICE, BOB, USER_IDS, bridge_id, passwords, users_sim
from tradebridge.cli.main import app
from tradebridge.config import format_env_value
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis

__all__ = ["passwords", "users_sim"]  # fixtures

KEYS = [f"token:{name}" for name in (*ALICE, BOB)]
# The child runs the tradebridge these tests import, wherever the working directory is.
CHILD_ENV = NO_SETTINGS | {"PYTHONPATH": str(Path(tradebridge.__file__).parents[1])}


pytestmark = pytest.mark.usefixtures("restore_logging")


def _config(tmp_path: Path, sim: SimServer, secrets_text: str, *, users: str | None = None) -> Path:
    """Write the TOML file (alice and bob, their accounts) and the 0600 secrets file."""
    config = tmp_path / "tradebridge.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[tradovate]\nnative_url = "{sim.url}/v1"\nbridge_url = "{sim.url}"\n'
        "requests_per_s = 100\nrequest_burst = 100\n"
        "[tokens]\nverify_interval_s = 0.3\nreseed_check_s = 0.3\n"
        + (
            users
            if users is not None
            else '[[users]]\nname = "alice"\n[[users]]\nname = "bob"\ndialect = "tvbridge"\n'
        )
        + f'[[accounts]]\nname = "{ALICE[0]}"\nuser = "alice"\n'
        f'[[accounts]]\nname = "{ALICE[1]}"\nuser = "alice"\n'
        f'[[accounts]]\nname = "{BOB}"\ndialect = "tvbridge"\nbridge_id = "{bridge_id(BOB)}"\n'
        'user = "bob"\n',
        encoding="utf-8",
    )
    env_file = tmp_path / "tradebridge.env"
    env_file.write_text(secrets_text, encoding="utf-8")
    env_file.chmod(0o600)
    return config


def _secrets(passwords: dict[str, str]) -> str:
    return "".join(
        f"TRADEBRIDGE_USER_{name.upper()}_PASSWORD={format_env_value(pw)}\n"
        for name, pw in passwords.items()
    )


def _tokens(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Return the token JSON under every key that holds one."""
    found = {}
    for key in KEYS:
        raw = client.get(key)
        if raw is not None:
            found[key] = json.loads(raw)
    return found


def _accepted(sim: SimServer, token: str) -> bool:
    return sim.call(lambda: sim.ctx.auth.verify(token) is not None)


def _cli(*args: str) -> Any:
    env = dict.fromkeys(NO_SETTINGS) | {"TRADEBRIDGE_USER_ALICE_PASSWORD": None}
    return CliRunner().invoke(app, list(args), env=env)


def test_tokens_serve_writes_every_key_renews_expired_and_exits_0_on_sigterm(
    users_sim: SimServer,
    passwords: dict[str, str],
    redis_server: EmbeddedRedis,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, users_sim, _secrets(passwords))
    args = ["tokens", "serve", "--config", str(config), "--redis-url", redis_server.url]
    proc = Proc([sys.executable, "-m", "tradebridge", *args], tmp_path / "serve.log", CHILD_ENV)
    try:
        first = wait_for(lambda: len(_tokens(rclient)) == 3 and _tokens(rclient), 30, "tokens")
        alice = [first[f"token:{name}"] for name in ALICE]
        assert alice[0]["accessToken"] == alice[1]["accessToken"]
        assert (alice[0]["kind"], alice[0]["userId"]) == ("native", USER_IDS["alice"])
        assert first[f"token:{BOB}"]["kind"] == "tv"

        # Tradovate ends every session; Redis still holds the dead tokens (no other writer).
        httpx.post(f"{users_sim.url}/_sim/tokens/expire", params={"rewrite": "false"})
        assert not _accepted(users_sim, alice[0]["accessToken"])

        def renewed() -> bool:
            now = _tokens(rclient)
            return len(now) == 3 and all(
                now[key]["accessToken"] != first[key]["accessToken"]
                and _accepted(users_sim, now[key]["accessToken"])
                for key in KEYS
            )

        wait_for(renewed, 30, "fresh tokens after the simulator expired them")
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.stop()
    output = proc.output()
    assert "token_login" in output
    assert "token_refused" in output
    for password in passwords.values():
        assert password not in output


def test_tokens_serve_once_logs_in_then_keeps_then_replaces_refused(
    users_sim: SimServer,
    passwords: dict[str, str],
    redis_server: EmbeddedRedis,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, users_sim, _secrets(passwords))
    once = ["tokens", "serve", "--once", "--config", str(config), "--redis-url", redis_server.url]

    first = _cli(*once)
    written = _tokens(rclient)
    rclient.delete(f"token:{ALICE[1]}")  # --once writes every key, not only what it renewed
    second = _cli(*once)
    httpx.post(f"{users_sim.url}/_sim/tokens/expire", params={"rewrite": "false"})
    third = _cli(*once)

    assert first.exit_code == 0, first.output
    assert "alice: login" in first.stdout
    assert "bob: login" in first.stdout
    assert len(written) == 3
    assert second.exit_code == 0, second.output
    assert "alice: kept" in second.stdout
    assert third.exit_code == 0, third.output
    assert "alice: login" in third.stdout
    after = _tokens(rclient)
    assert set(after) == set(KEYS)
    assert all(_accepted(users_sim, t["accessToken"]) for t in after.values())
    assert users_sim.ctx.auth.logins == 4  # alice and bob, twice: the expiry, nothing else


def test_tokens_serve_once_wrong_password_exit_1_names_user_not_password(
    users_sim: SimServer,
    passwords: dict[str, str],
    redis_server: EmbeddedRedis,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    wrong = {**passwords, "bob": passwords["bob"] + "-wrong"}
    config = _config(tmp_path, users_sim, _secrets(wrong))

    result = _cli("tokens", "serve", "--once", "--config", str(config), "--redis-url",
                  redis_server.url)  # fmt: skip

    assert result.exit_code == 1
    assert "alice: login" in result.stdout
    assert "bob: failed: Tradovate refused the login of bob" in result.stdout
    assert wrong["bob"] not in result.output
    assert set(_tokens(rclient)) == {f"token:{name}" for name in ALICE}


def test_tokens_serve_without_credentials_exit_1_one_line(
    users_sim: SimServer, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    config = _config(tmp_path, users_sim, "")

    result = _cli("tokens", "serve", "--config", str(config), "--redis-url", redis_server.url)

    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "no Tradovate user has credentials" in line
    assert "TRADEBRIDGE_USER_ALICE_PASSWORD is not set" in line


def test_tokens_serve_redis_unreachable_exit_1_one_line(
    users_sim: SimServer, passwords: dict[str, str], tmp_path: Path
) -> None:
    config = _config(tmp_path, users_sim, _secrets(passwords))

    result = _cli("tokens", "serve", "--once", "--config", str(config), "--redis-url",
                  "redis://127.0.0.1:1/0")  # fmt: skip

    assert result.exit_code == 1
    assert "Redis at redis://127.0.0.1:1/0 does not answer" in result.stderr
    assert users_sim.ctx.auth.logins == 0
