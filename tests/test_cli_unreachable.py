"""A Redis or database that does not answer is one error line, in every command.

The line names what could not be reached (its URL, password masked) and the fix; the exit
code is 1; there is never a traceback. Every case uses a closed port on loopback.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from _support.database import admin_execute, database_url
from _support.runtime import NO_SETTINGS, TRADEBRIDGE, Proc, child_env, wait_for
from tradebridge.cli.main import app
from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from tradebridge.store.migrate import migrate

PASSWORD = "hunter2secret"


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture(autouse=True)
def _no_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no tradebridge.toml, no .tradebridge stack


@pytest.fixture
def closed_redis() -> str:
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


@pytest.fixture
def closed_database() -> str:
    return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/ledger"


def _database(postgres_server: EmbeddedPostgres, *, migrated: bool) -> Iterator[str]:
    name = f"cu_{secrets.token_hex(6)}"
    asyncio.run(admin_execute(postgres_server.url, f'create database "{name}"'))
    url = database_url(postgres_server.url, name)
    if migrated:
        asyncio.run(migrate(url))
    yield url
    drop = f'drop database if exists "{name}" with (force)'
    asyncio.run(admin_execute(postgres_server.url, drop))


@pytest.fixture
def ledger_database(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh migrated database (serve needs the ledger's tables, the kill switches' first)."""
    yield from _database(postgres_server, migrated=True)


@pytest.fixture
def unmigrated_database(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database no migration ran on."""
    yield from _database(postgres_server, migrated=False)


def _masked(url: str) -> str:
    return url.replace(PASSWORD, "***")


def _invoke(args: list[str], env: dict[str, str | None] | None = None) -> Result:
    base: dict[str, str | None] = {"TRADEBRIDGE_CONFIG": None, "DATABASE_URL": None}
    return CliRunner().invoke(app, args, env={**base, "REDIS_URL": None, **(env or {})})


def _assert_one_line(stderr: str, exit_code: int, url: str, fix: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert exit_code == 1, stderr
    assert len(errors) == 1, stderr
    assert (
        f"cannot connect to {'Redis' if url.startswith('redis') else 'the database'} at "
        in (errors[0])
    )
    assert _masked(url) in errors[0]
    assert fix in errors[0]
    assert "tradebridge up" in errors[0] or "data directory" in errors[0]
    assert PASSWORD not in stderr
    assert "Traceback" not in stderr


BROKER_COMMANDS = [
    ["accounts"],
    ["tokens"],
    ["doctor"],
    ["doctor", "--account", "DEMO0000001"],
    ["orders", "--account", "DEMO0000001"],
    ["positions", "--account", "DEMO0000001"],
    ["fills", "--account", "DEMO0000001"],
    ["cancel", "123", "--account", "DEMO0000001"],
    ["flatten", "MNQ1!", "--account", "DEMO0000001"],
    ["order", "buy", "MNQ1!", "1", "--account", "DEMO0000001"],
]


@pytest.mark.parametrize("args", BROKER_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_broker_command_redis_closed_port_one_line_exit_1(
    args: list[str], closed_redis: str
) -> None:
    result = _invoke([*args, "--redis-url", closed_redis])

    _assert_one_line(result.stderr, result.exit_code, closed_redis, "REDIS_URL")
    assert result.stdout == ""


def test_broker_command_redis_from_environment_closed_one_line(closed_redis: str) -> None:
    result = _invoke(["accounts"], env={"REDIS_URL": closed_redis})

    _assert_one_line(result.stderr, result.exit_code, closed_redis, "REDIS_URL")


DATABASE_COMMANDS = [
    ["db", "migrate"],
    ["db", "status"],
    ["review", "list"],
    ["review", "show", "sig-1"],
    ["review", "adopt", "sig-1", "123"],
    ["review", "absent", "sig-1"],
    ["send", "buy", "MNQ1!", "1", "--account", "DEMO0000001"],
]


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=lambda a: "-".join(a[:2]))
@pytest.mark.parametrize("given", ["option", "environment"])
def test_database_command_closed_port_one_line_exit_1(
    args: list[str], given: str, closed_database: str
) -> None:
    if given == "option":
        result = _invoke([*args, "--database-url", closed_database])
    else:
        result = _invoke(args, env={"DATABASE_URL": closed_database})

    _assert_one_line(result.stderr, result.exit_code, closed_database, "DATABASE_URL")


def test_send_bracket_check_redis_closed_one_line(closed_redis: str, closed_database: str) -> None:
    # The bracket is checked against a quote (tokens from Redis) before the row is inserted.
    args = ["send", "buy", "MNQ1!", "1", "--account", "DEMO0000001", "--sl", "100",
            "--database-url", closed_database]  # fmt: skip
    result = _invoke(args, env={"REDIS_URL": closed_redis})

    _assert_one_line(result.stderr, result.exit_code, closed_redis, "REDIS_URL")


def _run(
    args: list[str], env: dict[str, str | None], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRADEBRIDGE, *args],
        capture_output=True, text=True, timeout=90, check=False, cwd=tmp_path,
        env=child_env({**NO_SETTINGS, "TRADEBRIDGE_WEBHOOK__SECRET": "s" * 32, **env}),
    )  # fmt: skip


@pytest.mark.parametrize("command", ["serve", "up"])
def test_serve_and_up_database_closed_one_line_exit_1(
    command: str, closed_database: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    env: dict[str, str | None] = {"DATABASE_URL": closed_database, "REDIS_URL": redis_server.url}
    done = _run([command, "--port", "0", "--data-dir", str(tmp_path / "d")], env, tmp_path)

    _assert_one_line(done.stderr, done.returncode, closed_database, "DATABASE_URL")


@pytest.mark.parametrize("command", ["serve", "up"])
def test_serve_and_up_redis_closed_one_line_exit_1(
    command: str, closed_redis: str, postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    env: dict[str, str | None] = {"DATABASE_URL": postgres_server.url, "REDIS_URL": closed_redis}
    done = _run([command, "--port", "0", "--data-dir", str(tmp_path / "d")], env, tmp_path)

    _assert_one_line(done.stderr, done.returncode, closed_redis, "REDIS_URL")


def test_sim_redis_closed_one_line_exit_1(closed_redis: str, tmp_path: Path) -> None:
    done = _run(["sim", "--port", "0", "--redis-url", closed_redis], {}, tmp_path)

    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    expected = (
        f"error: cannot write tokens to Redis at {_masked(closed_redis)}: connection refused; "
        "start it, or check --redis-url"
    )
    assert lines == [expected]


def test_serve_intake_only_starts_without_redis(
    closed_redis: str, ledger_database: str, tmp_path: Path
) -> None:
    # An intake-only process calls no broker: alerts are stored while Redis is away.
    env = {"DATABASE_URL": ledger_database, "REDIS_URL": closed_redis}
    proc = Proc([TRADEBRIDGE, "serve", "--workers", "0", "--port", "0"], tmp_path / "serve.log",
                env={**NO_SETTINGS, "TRADEBRIDGE_WEBHOOK__SECRET": "s" * 32, **env})  # fmt: skip
    try:
        wait_for(lambda: _serving(proc), 60, "serve --workers 0 to serve")
    finally:
        proc.stop()


def _serving(proc: Proc) -> bool:
    assert proc.alive(), proc.output()
    return "tradebridge serving" in proc.output()


def test_serve_on_a_database_without_the_migrations_says_to_migrate_exit_1(
    closed_redis: str, unmigrated_database: str, tmp_path: Path
) -> None:
    env: dict[str, str | None] = {"DATABASE_URL": unmigrated_database, "REDIS_URL": closed_redis}
    done = _run(["serve", "--workers", "0", "--port", "0"], env, tmp_path)

    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1, done.stderr
    expected = ("error: the ledger has no kill_switches table (migration 0007_kill_switch): "
                "run `tradebridge db migrate`")  # fmt: skip
    assert errors == [expected]
    assert "Traceback" not in done.stderr


def _malformed_url(special: str) -> str:
    # A generated password with a special character, pasted as is (not percent-encoded):
    # asyncpg reads the password's start as the port and quotes it in its ValueError.
    return f"postgresql://postgres:PGPASSab12{special}cd34@db.example.invalid:5432/postgres"


def _assert_malformed_one_line(stderr: str, exit_code: int) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert exit_code == 1, stderr
    assert len(errors) == 1, stderr
    assert "the database URL is malformed: percent-encode special characters" in errors[0]
    assert "PGPASS" not in stderr
    assert "cd34" not in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("special", ["/", "#", "?"])
@pytest.mark.parametrize("args", [["db", "status"], ["db", "migrate"], ["signals"]],
                         ids="-".join)  # fmt: skip
def test_database_command_malformed_url_one_line_without_the_password(
    args: list[str], special: str
) -> None:
    result = _invoke(args, env={"DATABASE_URL": _malformed_url(special)})

    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    _assert_malformed_one_line(result.stderr, result.exit_code)
    assert "PGPASS" not in result.stdout


def test_serve_malformed_database_url_one_line_without_the_password(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    env: dict[str, str | None] = {
        "DATABASE_URL": _malformed_url("/"),
        "REDIS_URL": redis_server.url,
    }
    done = _run(["serve", "--port", "0", "--data-dir", str(tmp_path / "d")], env, tmp_path)

    _assert_malformed_one_line(done.stderr, done.returncode)
    assert "PGPASS" not in done.stdout
