"""Does a database URL give tradebridge real sessions? (docs/supabase.md, "Pick the connection")

A transaction pooler (Supabase's Supavisor on port 6543, PgBouncer ``pool_mode =
transaction``) hands the server connection to another client after every transaction. The
workers would then lose their LISTEN (no wake-ups, and no error says so), take their
liveness lock on a backend other clients use (a live worker reads as dead, a dead one as
live) and meet ``prepared statement "__asyncpg_stmt_…" does not exist`` now and then. So
``serve`` refuses such a URL at start and ``doctor`` fails its database check.

The port is a hint only (6543 is Supabase's convention, nobody else's). The test is whether a
session lasts: connection A notes its backend and a session setting; connection B, in an open
transaction, notes its own; then A looks again. On a real session (direct, or a session
pooler) B runs on a backend of its own and A finds its backend and setting unchanged. Behind
a transaction pooler B gets A's idle backend (and setting), or A, whose backend B now holds,
gets another one.
"""

from __future__ import annotations

import contextlib
import secrets
from urllib.parse import urlsplit

import asyncpg

from tradebridge.errors import ConfigError
from tradebridge.store.migrate import connect, describe_url, unavailable

SUPABASE_TRANSACTION_PORT = 6543
_SETTING = "tradebridge.session_probe"
_PROBE_SETTINGS = {"application_name": "tradebridge-session-probe"}


async def lost_sessions(url: str, *, timeout_s: float = 10.0) -> str | None:
    """Return why ``url`` does not keep a session between transactions; None if it does."""
    token = secrets.token_hex(8)
    # No statement cache: behind a transaction pooler the probe itself must not trip on it.
    options = {"statement_cache_size": 0, "server_settings": _PROBE_SETTINGS}
    first = await connect(url, connect_timeout_s=timeout_s, **options)
    second: asyncpg.Connection | None = None
    try:
        pid = await first.fetchval(
            "select pg_backend_pid() from (select set_config($1, $2, false)) s",
            _SETTING, token, timeout=timeout_s,
        )  # fmt: skip
        second = await connect(url, connect_timeout_s=timeout_s, **options)
        async with second.transaction():
            other = await second.fetchrow(
                "select pg_backend_pid() as pid, current_setting($1, true) as probe",
                _SETTING, timeout=timeout_s,
            )  # fmt: skip
            again = await first.fetchrow(
                "select pg_backend_pid() as pid, current_setting($1, true) as probe",
                _SETTING, timeout=timeout_s,
            )  # fmt: skip
    except asyncpg.InvalidSQLStatementNameError:
        return "a prepared statement vanished between two statements of one connection"
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise unavailable(url, e) from None
    finally:
        for conn in (second, first):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
    assert other is not None
    assert again is not None
    if other["pid"] == pid or other["probe"] == token:
        return "a second connection ran on the first one's server session"
    if again["pid"] != pid or again["probe"] != token:
        return "a connection's server session changed between two transactions"
    return None


def _port(url: str) -> int | None:
    with contextlib.suppress(ValueError):
        return urlsplit(url).port
    return None


def transaction_pooler_advice(url: str, why: str) -> tuple[str, str]:
    """Return the plain-words finding and its fix for a URL whose sessions do not last."""
    hint = (
        f" (port {SUPABASE_TRANSACTION_PORT} is Supabase's transaction pooler)"
        if _port(url) == SUPABASE_TRANSACTION_PORT
        else ""
    )
    finding = (
        f"{describe_url(url)} is a transaction pooler{hint}: {why}. tradebridge needs a "
        "session that lasts: its LISTEN wake-ups, its worker liveness lock (a session "
        "advisory lock) and asyncpg's prepared statements would be lost after every "
        "transaction, silently"
    )
    fix = (
        "use the direct connection or the session pooler, port 5432 (Supabase: "
        "aws-0-<region>.pooler.supabase.com:5432; PgBouncer: pool_mode = session); "
        "docs/supabase.md"
    )
    return finding, fix


async def require_sessions(url: str, *, timeout_s: float = 10.0) -> None:
    """Refuse (``ConfigError``) a database URL behind a transaction pooler."""
    why = await lost_sessions(url, timeout_s=timeout_s)
    if why is not None:
        finding, fix = transaction_pooler_advice(url, why)
        raise ConfigError(f"{finding}. Fix: {fix}")
