"""``tradebridge db migrate`` and ``db status``: output, exit codes, errors without secrets."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from typer.testing import CliRunner, Result

from _support.database import admin_execute, database_url
from _support.legacy import create_legacy
from tradebridge.cli.main import app
from tradebridge.store.embedded import EmbeddedPostgres, free_port


@pytest.fixture
def fresh_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """Create an empty database (synchronously: the CLI runs its own event loop)."""
    name = f"cli_{secrets.token_hex(6)}"
    server = postgres_server.url
    asyncio.run(admin_execute(server, f'create database "{name}"'))
    yield database_url(server, name)
    asyncio.run(admin_execute(server, f'drop database if exists "{name}" with (force)'))


@pytest.fixture(autouse=True)
def _no_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no tradebridge.toml found by default


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    # No settings file, no DATABASE_URL unless given: the test decides.
    base = {"DATABASE_URL": "", "TRADEBRIDGE_CONFIG": ""}
    return CliRunner().invoke(app, args, env={**base, **(env or {})}, terminal_width=200)


def test_db_migrate_then_again_reports_applied_then_up_to_date(
    fresh_url: str, tmp_path: Path
) -> None:
    first = _invoke(["db", "migrate", "--database-url", fresh_url])
    second = _invoke(["db", "migrate"], env={"DATABASE_URL": fresh_url})
    assert first.exit_code == 0, first.output
    assert "applied 0001_ledger" in first.stdout
    assert second.exit_code == 0, second.output
    assert "up to date" in second.stdout
    assert urlsplit(fresh_url).password not in first.stdout + second.stdout


def test_db_status_before_and_after_migrate(fresh_url: str) -> None:
    before = _invoke(["db", "status", "--database-url", fresh_url])
    _invoke(["db", "migrate", "--database-url", fresh_url])
    after = _invoke(["db", "status", "--database-url", fresh_url])
    assert before.exit_code == 1
    assert "0001_ledger  pending" in before.stdout
    assert after.exit_code == 0
    assert "0001_ledger  applied" in after.stdout


def test_db_migrate_settings_file_database_url_used(fresh_url: str, tmp_path: Path) -> None:
    config = tmp_path / "tradebridge.toml"
    config.write_text(f'[database]\nurl = "{fresh_url}"\n')
    result = _invoke(["db", "migrate", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "applied 0001_ledger" in result.stdout


def _unreachable_url() -> str:
    return f"postgresql://postgres:hunter2secret@127.0.0.1:{free_port()}/postgres"


def _wrong_password_url(server_url: str) -> str:
    parts = urlsplit(server_url)
    netloc = f"postgres:wrongpass-hunter3@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.mark.parametrize(
    ("make_url", "reason"),
    [
        (lambda _: _unreachable_url(), "connection refused"),
        (_wrong_password_url, "password authentication failed"),
    ],
)
def test_db_migrate_bad_database_one_line_exit_1_no_password(
    postgres_server: EmbeddedPostgres, tmp_path: Path, make_url: object, reason: str
) -> None:
    url = make_url(postgres_server.url)  # type: ignore[operator]
    result = _invoke(["db", "migrate", "--database-url", url])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: cannot connect to the database at postgresql://postgres:***@"
    )
    assert reason in lines[0]
    assert "DATABASE_URL" in lines[0]  # and the fix
    assert urlsplit(url).password not in result.output
    assert "Traceback" not in result.output


def test_db_migrate_no_url_exit_2(tmp_path: Path) -> None:
    result = _invoke(["db", "migrate"])
    assert result.exit_code == 2
    assert "no database: no `up` stack runs in .tradebridge" in result.stderr
    assert "pass --database-url / set DATABASE_URL" in result.stderr


def test_db_migrate_subprocess_unreachable_no_traceback(tmp_path: Path) -> None:
    url = _unreachable_url()
    done = subprocess.run(
        [sys.executable, "-m", "tradebridge", "db", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "hunter2secret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def _running_stack(data_dir: Path, database_url: str) -> Path:
    """Write the endpoints.json a running ``up`` writes (its pid: this live process)."""
    data_dir.mkdir(parents=True)
    found = {"pid": os.getpid(), "database_url": database_url, "redis_url": "redis://x:1/0"}
    (data_dir / "endpoints.json").write_text(json.dumps(found))
    return data_dir


def test_db_migrate_and_status_data_dir_find_the_up_stack_database_over_database_url(
    fresh_url: str, tmp_path: Path
) -> None:
    stack = str(_running_stack(tmp_path / "stack", fresh_url))
    elsewhere = {"DATABASE_URL": _unreachable_url()}  # an explicit --data-dir beats it

    before = _invoke(["db", "status", "--data-dir", stack], env=elsewhere)
    migrated = _invoke(["db", "migrate", "--data-dir", stack], env=elsewhere)
    after = _invoke(["db", "status", "--data-dir", stack], env=elsewhere)

    assert before.exit_code == 1, before.output
    assert "0001_ledger  pending" in before.stdout
    assert migrated.exit_code == 0, migrated.output
    assert "applied 0001_ledger" in migrated.stdout
    assert after.exit_code == 0, after.output
    assert "0001_ledger  applied" in after.stdout


def test_db_status_default_data_dir_stack_found_without_url(fresh_url: str, tmp_path: Path) -> None:
    _running_stack(tmp_path / ".tradebridge", fresh_url)  # the cwd's default data directory
    result = _invoke(["db", "status"])
    assert result.exit_code == 1, result.output
    assert "0001_ledger  pending" in result.stdout


def test_db_status_data_dir_of_stopped_stack_exit_2_says_start_it(tmp_path: Path) -> None:
    (tmp_path / "stack" / "postgres").mkdir(parents=True)  # an `up` ran here once
    result = _invoke(["db", "status", "--data-dir", str(tmp_path / "stack")])
    assert result.exit_code == 2
    assert f"the `up` stack of {tmp_path / 'stack'} is not running" in result.stderr
    assert f"tradebridge up --data-dir {tmp_path / 'stack'}" in result.stderr


def _fingerprint(url: str) -> list[tuple[object, ...]]:
    """Return every table, column and type of the public schema, and the signals' statuses."""

    async def read() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(url)
        try:
            columns = await conn.fetch(
                "select c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
                "a.attnotnull from pg_attribute a join pg_class c on c.oid = a.attrelid "
                "where c.relnamespace = 'public'::regnamespace and a.attnum > 0 "
                "and not a.attisdropped order by 1, 2"
            )
            rows = await conn.fetch("select signal_id, status from trading_signals order by 1")
            checks = await conn.fetch(
                "select conname from pg_constraint where conrelid = 'trading_signals'::regclass "
                "order by 1"
            )
        finally:
            await conn.close()
        return [tuple(r) for r in [*columns, *rows, *checks]]

    return asyncio.run(read())


def test_db_migrate_dry_run_prints_the_plan_and_changes_nothing(fresh_url: str) -> None:
    asyncio.run(create_legacy(fresh_url))
    before = _fingerprint(fresh_url)
    result = _invoke(["db", "migrate", "--dry-run", "--database-url", fresh_url])
    assert result.exit_code == 0, result.output
    assert _fingerprint(fresh_url) == before
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": the plan (dry run, nothing is changed)")
    order = [
        "  adapt     move order_history (id uuid, signal_id uuid, event_type character varying(50)",
        "  adapt     widen trading_signals.price from numeric(12,2) to numeric",
        "  adapt     drop check trading_signals_order_type_check",
        "  adapt     drop check trading_signals_status_check",
        "  migrate   0001_ledger",
        "  migrate   0006_outside_writes",
        "  adapt     status 'placed' becomes 'needs_review' on 1 row (event legacy_adopted)",
        "  adapt     status 'processing' becomes 'needs_review' on 1 row (event legacy_adopted)",
        "  adapt     turn row-level security on for the new order_history",
        "  keep      trading_signals.id uuid (the primary key",
        "  keep      check trading_signals_side_check",
        "  note      1 row pending",
        "  keep      trigger update_trading_signals_updated_at (update_updated_at_column())",
        "  note      RLS policy 'Allow all for authenticated users' on trading_signals",
    ]
    found = [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in order]
    assert found == sorted(found)
    assert "conflict" not in result.stdout


def test_db_migrate_dry_run_with_a_conflict_exits_1_naming_it_and_its_fix(
    fresh_url: str,
) -> None:
    asyncio.run(create_legacy(fresh_url))
    asyncio.run(
        admin_execute(
            fresh_url,
            "alter table trading_signals drop constraint trading_signals_quantity_check; "
            "alter table trading_signals alter column quantity type text",
        )
    )
    result = _invoke(["db", "migrate", "--dry-run", "--database-url", fresh_url])
    assert result.exit_code == 1
    assert (
        "  conflict  trading_signals.quantity is text: tradebridge needs one of float4, float8, "
        "int2, int4, int8, numeric\n"
        '            fix: convert it (alter table trading_signals alter column "quantity" type '
        'numeric using "quantity"::numeric) or rename it'
    ) in result.stdout
    assert "1 conflict(s): `tradebridge db migrate` would stop" in result.stderr


def test_db_migrate_with_a_conflict_exits_1_and_changes_nothing(fresh_url: str) -> None:
    asyncio.run(create_legacy(fresh_url))
    asyncio.run(admin_execute(fresh_url, "alter table trading_signals add column desk text"))
    asyncio.run(
        admin_execute(
            fresh_url,
            "update trading_signals set desk = 'NY'; "
            "alter table trading_signals alter column desk set not null",
        )
    )
    before = _fingerprint(fresh_url)
    result = _invoke(["db", "migrate", "--database-url", fresh_url])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "conflict: trading_signals.desk is NOT NULL without a default: tradebridge's own inserts "
        "(webhook, CLI) do not know it"
    )
    assert lines[1].startswith('  fix: alter table trading_signals alter column "desk" set default')
    assert lines[-1] == "error: 1 conflict(s); nothing was changed"
    assert _fingerprint(fresh_url) == before


def test_db_migrate_on_the_previous_deployment_says_what_it_adapted(fresh_url: str) -> None:
    asyncio.run(create_legacy(fresh_url))
    result = _invoke(["db", "migrate", "--database-url", fresh_url])
    again = _invoke(["db", "migrate", "--database-url", fresh_url])
    assert result.exit_code == 0, result.output
    assert "adapted: move order_history (" in result.stdout
    assert "applied 0006_outside_writes" in result.stdout
    assert "adapted: status 'placed' becomes 'needs_review' on 1 row" in result.stdout
    assert again.exit_code == 0, again.output
    assert "adapted" not in again.stdout
    assert "up to date" in again.stdout


def test_db_migrate_shows_what_a_migration_noticed(fresh_url: str) -> None:
    # A strategy's own table with a nullable intent holding nulls: migration 0002 leaves the
    # column nullable and says so (a NOTICE); the operator reads it in the command's output.
    async def with_null_intents() -> None:
        await create_legacy(fresh_url)
        conn = await asyncpg.connect(fresh_url)
        try:
            await conn.execute("alter table trading_signals add column intent text")
        finally:
            await conn.close()

    asyncio.run(with_null_intents())
    result = _invoke(["db", "migrate", "--database-url", fresh_url])
    assert result.exit_code == 0, result.output
    assert "notice: trading_signals.intent has nulls; left nullable" in result.stdout
    again = _invoke(["db", "migrate", "--database-url", fresh_url])
    assert "notice:" not in again.stdout
