"""``tradebridge init`` end to end against the simulator: prompts, flags, files, the doctor.

alice (two accounts) and bob (one) are the simulator's users, with passwords minted per
test; every test checks that no secret reaches the TOML file or the output.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

import tradebridge
from _support.runtime import NO_SETTINGS, child_env
from _support.users import ALICE, BOB, SIM_IDS, USER_IDS, bridge_id, passwords, users_sim
from tradebridge.cli.main import app
from tradebridge.config import NativeCredentials, load_settings
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis

__all__ = ["passwords", "users_sim"]  # fixtures

# Nothing of the machine's own settings or secrets may reach the command under test.
CLEAN = dict.fromkeys(
    [*NO_SETTINGS, "TRADEBRIDGE_ENV_FILE", *(f"TRADEBRIDGE_USER_{u}_{s}" for u in ("ALICE", "BOB")
                                            for s in ("PASSWORD", "SEC"))]
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("restore_logging", "rclient")


def _invoke(args: list[str], *, text: str | None = None, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["init", *args], input=text, env={**CLEAN, **(env or {})})


def _paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "tradebridge.toml", tmp_path / "tradebridge.env"


def _where(tmp_path: Path, sim: SimServer, redis_url: str, dialect: str = "native") -> list[str]:
    """The flags every test passes: the files, the simulator's host, Redis, the data dir."""
    url = ["--native-url", f"{sim.url}/v1"] if dialect == "native" else ["--bridge-url", sim.url]
    config, _ = _paths(tmp_path)
    return ["--config", str(config), "--data-dir", str(tmp_path / "data"), "--redis-url",
            redis_url, *url]  # fmt: skip


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _no_secret_in(texts: list[str], minted: list[str]) -> None:
    for text in texts:
        for secret in minted:
            assert secret not in text


def test_init_interactive_two_native_users_writes_files_and_doctor_passes(
    users_sim: SimServer,
    passwords: dict[str, str],
    redis_server: EmbeddedRedis,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    sec = secrets.token_hex(8)
    answers = [
        "",  # environment: demo
        "",  # dialect: native
        "alice", passwords["alice"], "7", "", sec,  # user, password, cid, appId, sec
        "",  # alice's accounts: all
        "y",  # another user
        "bob", passwords["bob"], "", "", "",  # user, password, cid 0, appId, no sec
        "1",  # bob's accounts: the first
        "",  # no other user
    ]  # fmt: skip

    result = _invoke(_where(tmp_path, users_sim, redis_server.url), text="\n".join(answers) + "\n")

    assert result.exit_code == 0, result.output
    config, env_file = _paths(tmp_path)
    assert (_mode(env_file), _mode(config)) == (0o600, 0o644)
    written = tomllib.loads(config.read_text())
    assert written["tradovate"] == {"environment": "demo", "native_url": f"{users_sim.url}/v1"}
    assert [(u["name"], u["dialect"], u["cid"]) for u in written["users"]] == [
        ("alice", "native", 7),
        ("bob", "native", 0),
    ]
    assert [(a["name"], a["native_id"], a["user"]) for a in written["accounts"]] == [
        (ALICE[0], SIM_IDS[ALICE[0]], "alice"),
        (ALICE[1], SIM_IDS[ALICE[1]], "alice"),
        (BOB, SIM_IDS[BOB], "bob"),
    ]
    settings = load_settings(config)
    logins = [user.credentials() for user in settings.users]
    assert [c.password.get_secret_value() for c in logins if c] == list(passwords.values())
    assert isinstance(logins[0], NativeCredentials)
    assert logins[0].sec.get_secret_value() == sec
    for name in (*ALICE, BOB):
        stored = json.loads(rclient.get(f"token:{name}") or "{}")
        assert stored["userId"] == USER_IDS["bob" if name == BOB else "alice"]
    assert f"doctor: all checks passed ({ALICE[0]} of alice, {BOB} of bob)" in result.stdout
    _no_secret_in([result.output, config.read_text()], [*passwords.values(), sec])


def test_init_interactive_wrong_password_clear_error_nothing_written(
    users_sim: SimServer, passwords: dict[str, str], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    wrong = passwords["alice"] + "-typo"
    answers = ["", "tvbridge", "alice", wrong]

    result = _invoke(
        _where(tmp_path, users_sim, redis_server.url, "tvbridge"), text="\n".join(answers) + "\n"
    )

    assert result.exit_code == 1
    assert "Tradovate refused the login of alice" in result.stderr
    assert "nothing was written" in result.stderr
    assert not [p.name for p in tmp_path.glob("tradebridge.*")]
    _no_secret_in([result.output], [wrong])


def test_init_non_interactive_subprocess_bridge_users_then_doctor_passes(
    users_sim: SimServer,
    passwords: dict[str, str],
    redis_server: EmbeddedRedis,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    src = str(Path(tradebridge.__file__).parents[1])
    env = child_env({**CLEAN, "PYTHONPATH": src} | {
        f"TRADEBRIDGE_USER_{name.upper()}_PASSWORD": pw for name, pw in passwords.items()
    })  # fmt: skip
    command = [sys.executable, "-m", "tradebridge"]
    args = ["init", "--non-interactive", "--environment", "demo", "--dialect", "tvbridge",
            "--user", "alice", "--user", "bob", "--accounts", "all",
            *_where(tmp_path, users_sim, redis_server.url, "tvbridge")]  # fmt: skip

    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    config, env_file = _paths(tmp_path)
    assert _mode(env_file) == 0o600
    written = tomllib.loads(config.read_text())
    assert [(u["name"], u["dialect"]) for u in written["users"]] == [
        ("alice", "tvbridge"),
        ("bob", "tvbridge"),
    ]
    assert [(a["name"], a["bridge_id"], a["dialect"]) for a in written["accounts"]] == [
        (name, bridge_id(name), "tvbridge") for name in (*ALICE, BOB)
    ]
    assert f"doctor: all checks passed ({ALICE[0]} of alice, {BOB} of bob)" in done.stdout
    # The written configuration is what later commands load: the doctor alone passes too,
    # with the secrets only in the file (the process environment has none).
    env_without = {k: v for k, v in env.items() if not k.startswith("TRADEBRIDGE_USER_")}
    doctor = subprocess.run(
        [*command, "doctor", "--config", str(config), "--redis-url", redis_server.url],
        env=env_without, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    with_secrets = load_settings(config, env_file=str(env_file))
    assert all(user.credentials() is not None for user in with_secrets.users)
    _no_secret_in(
        [done.stdout, done.stderr, doctor.stdout, doctor.stderr, config.read_text()],
        list(passwords.values()),
    )


def test_init_non_interactive_password_missing_names_variable_before_any_login(
    users_sim: SimServer, passwords: dict[str, str], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    result = _invoke(
        ["--non-interactive", "--user", "alice", "--user", "bob",
         *_where(tmp_path, users_sim, redis_server.url)],
        env={"TRADEBRIDGE_USER_ALICE_PASSWORD": passwords["alice"]},
    )  # fmt: skip

    assert result.exit_code == 2
    assert "set TRADEBRIDGE_USER_BOB_PASSWORD in the environment" in result.stderr
    assert not _paths(tmp_path)[0].exists()
    assert users_sim.ctx.auth.logins == 0


def test_init_existing_config_refused_without_force_then_replaced_with_it(
    users_sim: SimServer, passwords: dict[str, str], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    config, _ = _paths(tmp_path)
    config.write_text("# mine\n")
    args = ["--non-interactive", "--user", "alice", *_where(tmp_path, users_sim, redis_server.url)]
    env = {"TRADEBRIDGE_USER_ALICE_PASSWORD": passwords["alice"]}

    refused = _invoke(args, env=env)
    assert (refused.exit_code, config.read_text()) == (2, "# mine\n")
    assert "pass --force" in refused.stderr

    replaced = _invoke([*args, "--force"], env=env)
    assert replaced.exit_code == 0, replaced.output
    assert tomllib.loads(config.read_text())["users"][0]["name"] == "alice"


def test_init_non_interactive_live_needs_confirm_live_then_writes_it(
    users_sim: SimServer, passwords: dict[str, str], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    config, _ = _paths(tmp_path)
    args = ["--non-interactive", "--environment", "live", "--user", "alice",
            *_where(tmp_path, users_sim, redis_server.url)]  # fmt: skip
    env = {"TRADEBRIDGE_USER_ALICE_PASSWORD": passwords["alice"]}

    refused = _invoke(args, env=env)
    assert refused.exit_code == 2
    assert "--confirm-live" in refused.stderr
    assert not config.exists()

    confirmed = _invoke([*args, "--confirm-live"], env=env)
    assert confirmed.exit_code == 0, confirmed.output
    tradovate = tomllib.loads(config.read_text())["tradovate"]
    assert (tradovate["environment"], tradovate["confirm_live"]) == ("live", True)


def test_init_interactive_live_not_typed_refused_nothing_written(
    users_sim: SimServer, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    result = _invoke(_where(tmp_path, users_sim, redis_server.url), text="live\nyes\n")

    assert result.exit_code == 2
    assert "live not confirmed" in result.stderr
    assert not _paths(tmp_path)[0].exists()


def test_init_accounts_names_a_subset_and_refuses_unknown_names(
    users_sim: SimServer, passwords: dict[str, str], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    env = {f"TRADEBRIDGE_USER_{n.upper()}_PASSWORD": pw for n, pw in passwords.items()}
    base = ["--non-interactive", "--user", "alice", "--user", "bob",
            *_where(tmp_path, users_sim, redis_server.url)]  # fmt: skip

    unknown = _invoke([*base, "--accounts", f"{ALICE[1]},NOPE0001"], env=env)
    assert unknown.exit_code == 2
    assert "NOPE0001, which no user lists" in unknown.stderr
    assert not _paths(tmp_path)[0].exists()

    subset = _invoke([*base, "--accounts", f"{ALICE[1]},{BOB}"], env=env)
    assert subset.exit_code == 0, subset.output
    written = tomllib.loads(_paths(tmp_path)[0].read_text())
    assert [(a["name"], a["user"]) for a in written["accounts"]] == [
        (ALICE[1], "alice"),
        (BOB, "bob"),
    ]


def test_init_keeps_other_lines_of_secrets_file_and_refuses_an_open_one(
    users_sim: SimServer, passwords: dict[str, str], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    _, env_file = _paths(tmp_path)
    env_file.write_text("# mine\nTRADEBRIDGE_WEBHOOK__SECRET='keep-me'\n")
    env_file.chmod(0o644)
    args = ["--non-interactive", "--user", "alice", *_where(tmp_path, users_sim, redis_server.url)]
    env = {"TRADEBRIDGE_USER_ALICE_PASSWORD": passwords["alice"]}

    refused = _invoke(args, env=env)
    assert refused.exit_code == 2
    assert f"chmod 600 {env_file}" in refused.stderr

    env_file.chmod(0o600)
    done = _invoke(args, env=env)
    assert done.exit_code == 0, done.output
    lines = env_file.read_text().splitlines()
    assert lines[:2] == ["# mine", "TRADEBRIDGE_WEBHOOK__SECRET='keep-me'"]
    assert f"TRADEBRIDGE_USER_ALICE_PASSWORD='{passwords['alice']}'" in lines
    assert _mode(env_file) == 0o600


def test_init_without_redis_still_logs_in_writes_and_skips_doctor(
    users_sim: SimServer, passwords: dict[str, str], tmp_path: Path
) -> None:
    args = ["--non-interactive", "--user", "bob",
            *_where(tmp_path, users_sim, "redis://127.0.0.1:1/0")]  # fmt: skip

    result = _invoke(args, env={"TRADEBRIDGE_USER_BOB_PASSWORD": passwords["bob"]})

    assert result.exit_code == 0, result.output
    assert "doctor: skipped (Redis does not answer)" in result.stdout
    assert users_sim.ctx.auth.logins == 1
    assert os.access(_paths(tmp_path)[1], os.R_OK)
