"""Versioned schema migrations owned by tradebridge (``tradebridge db migrate``).

Migrations are the files ``sql/NNNN_name.sql`` of this package, applied in version order.
Each runs in its own transaction together with its row in ``tradebridge_schema_migrations``
(version, name, checksum, applied_at), so a failure leaves nothing half-applied. The whole
run holds a session advisory lock: two workers migrating at once take turns and the second
finds nothing left to do. An applied migration whose file changed since is refused.

Before the migrations, the database is inspected (``adopt.inspect``): ledger tables another
program created are adapted where that is safe, or the run stops with each conflict and its
fix, changing nothing. The adaptation, the pending migrations and the check that the workers
can use the result (``adopt.verify``) then run in ONE transaction: a run either leaves a
ledger the workers can use or changes nothing. When the plan adapts anything, the migrations
already applied run again too (each file is idempotent): a table moved aside is then made
anew, as on a database that never had it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tradebridge.errors import DatabaseUnavailable, MigrationFailed
from tradebridge.obs.logging import mask_url
from tradebridge.store import adopt

# One fixed bigint key ('tbmigrat' in ASCII) for every tradebridge migrator on a database.
MIGRATION_LOCK_KEY = 0x74626D6967726174
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_BOOKKEEPING = """
create table if not exists tradebridge_schema_migrations (
    version     integer primary key,
    name        text not null,
    checksum    text not null,
    applied_at  timestamptz not null default now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version, name, SQL text and checksum."""

    version: int
    name: str
    sql: str
    checksum: str


@dataclass(frozen=True, slots=True)
class MigrationState:
    """Where one migration stands on a database."""

    version: int
    name: str
    checksum: str
    applied_at: datetime | None
    applied_now: bool = False
    checksum_matches: bool = True

    @property
    def is_applied(self) -> bool:
        """Return whether the database has this migration."""
        return self.applied_at is not None


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What one run did: where each migration stands, the adoption plan it carried out, and
    the rows whose legacy status it mapped."""

    states: list[MigrationState]
    plan: adopt.Plan
    mapped: tuple[str, ...] = ()
    # What the migrations said as they ran (RAISE NOTICE: a check left NOT VALID over
    # existing rows, a column left nullable), in order.
    notices: tuple[str, ...] = ()


def load_migrations() -> list[Migration]:
    """Return the packaged migrations in version order."""
    found: list[Migration] = []
    for entry in resources.files("tradebridge.store").joinpath("sql").iterdir():
        match = _FILE_NAME.match(entry.name)
        if not match:
            continue
        data = entry.read_bytes()
        found.append(
            Migration(
                version=int(match["version"]),
                name=match["name"],
                sql=data.decode("utf-8"),
                checksum=hashlib.sha256(data).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationFailed(f"two migration files share a version: {versions}")
    return found


def describe_url(url: str) -> str:
    """Return ``host:port/database`` of a database URL: no user, no password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "the database (unparseable URL)"
    database = parts.path.lstrip("/") or "postgres"
    return f"{host}:{port}/{database}"


async def connect(
    url: str, *, connect_timeout_s: float = 10.0, **kwargs: Any
) -> asyncpg.Connection:
    """Open one connection; ``DatabaseUnavailable`` names the host, never the password."""
    try:
        return await asyncpg.connect(url, timeout=connect_timeout_s, **kwargs)
    except (
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,  # a server shutting down mid-handshake
    ) as e:
        raise unavailable(url, e) from None
    except ValueError:
        raise malformed_url() from None


def malformed_url() -> DatabaseUnavailable:
    """Return the error of a URL asyncpg cannot read, naming no part of it.

    asyncpg's own ``ValueError`` quotes the piece it tried to read as the port: with an
    unescaped ``/``, ``#`` or ``?`` in the password, the start of the password.
    """
    return DatabaseUnavailable(
        "the database URL is malformed: percent-encode special characters in the password "
        "(/ as %2F, # as %23, ? as %3F, @ as %40)",
        reason="malformed URL",
    )


def unavailable(url: str, error: BaseException) -> DatabaseUnavailable:
    """Translate a connection failure into ``DatabaseUnavailable`` without secrets."""
    if isinstance(error, TimeoutError):
        reason = "timed out"
    elif isinstance(error, OSError):
        reason = error.strerror or type(error).__name__
        if "Connect call failed" in str(error) or "Multiple exceptions" in str(error):
            reason = "connection refused"
    else:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    password = urlsplit(url).password if "://" in url else None
    if password:
        reason = reason.replace(password, "***")
    return DatabaseUnavailable(
        f"cannot connect to {describe_url(url)}: {reason}", where=mask_url(url), reason=reason
    )


async def migrate(url: str, *, lock_timeout_s: float = 60.0) -> list[MigrationState]:
    """Apply every pending migration to the database at ``url``; return where each stands."""
    return (await migrate_report(url, lock_timeout_s=lock_timeout_s)).states


async def migrate_report(url: str, *, lock_timeout_s: float = 60.0) -> MigrationReport:
    """Adapt what exists, apply every pending migration and verify the ledger at ``url``."""
    conn = await connect(url)
    try:
        return await _migrate(conn, lock_timeout_s=lock_timeout_s)
    finally:
        await conn.close()


async def migrate_connection(
    conn: asyncpg.Connection, *, lock_timeout_s: float = 60.0
) -> list[MigrationState]:
    """Apply every pending migration over ``conn`` under the migration advisory lock."""
    return (await _migrate(conn, lock_timeout_s=lock_timeout_s)).states


async def plan(url: str) -> tuple[adopt.Plan, list[MigrationState]]:
    """Return what ``migrate`` would do at ``url`` (the adoption plan, each migration's
    state), changing nothing."""
    conn = await connect(url)
    try:
        async with conn.transaction(readonly=True):
            found = await adopt.inspect(conn)
    finally:
        await conn.close()
    return found, await status(url)


async def _migrate(conn: asyncpg.Connection, *, lock_timeout_s: float) -> MigrationReport:
    notices: list[str] = []

    def noticed(_conn: Any, message: Any) -> None:
        # A migration's own RAISE NOTICE (PL/pgSQL), or any warning; not the server's "already
        # exists, skipping" of an IF NOT EXISTS run again.
        raised = getattr(message, "server_source_function", None) == "exec_stmt_raise"
        if raised or getattr(message, "severity_en", None) == "WARNING":
            notices.append(str(getattr(message, "message", message)))

    conn.add_log_listener(noticed)
    try:
        report = await _migrate_locked(conn, lock_timeout_s=lock_timeout_s)
    finally:
        conn.remove_log_listener(noticed)
    return replace(report, notices=tuple(notices))


async def _migrate_locked(conn: asyncpg.Connection, *, lock_timeout_s: float) -> MigrationReport:
    migrations = load_migrations()
    # lock_timeout bounds the wait for the advisory lock and for DDL behind long transactions.
    await conn.execute(f"set lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
    try:
        await conn.execute("select pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    except asyncpg.LockNotAvailableError as e:
        raise MigrationFailed(
            f"another migration held the lock for more than {lock_timeout_s:.0f}s"
        ) from e
    try:
        exists = await conn.fetchval("select to_regclass('tradebridge_schema_migrations')")
        applied = await _applied(conn) if exists else {}
        for migration in migrations:
            done = applied.get(migration.version)
            if done is not None:
                _check_unchanged(migration, done)
        found = await adopt.inspect(conn)
        if found.conflicts:
            raise adopt.AdoptionConflict(found)
        async with conn.transaction():
            await conn.execute(_BOOKKEEPING)
            await adopt.apply_before(conn, found)
            states: list[MigrationState] = []
            for migration in migrations:
                done = applied.get(migration.version)
                if done is None:
                    states.append(await _apply(conn, migration))
                    continue
                if found.adapts:
                    await _rerun(conn, migration)
                states.append(_state(migration, done["applied_at"]))
            mapped = await adopt.apply_after(conn, found)
            problems = await adopt.verify(conn)
            if problems:
                raise MigrationFailed(
                    "the workers could not use this ledger, so nothing was changed: "
                    + "; ".join(problems)
                )
        return MigrationReport(states, found, tuple(mapped))
    finally:
        await conn.execute("select pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def status(url: str) -> list[MigrationState]:
    """Return where each packaged migration stands on the database, changing nothing."""
    conn = await connect(url)
    try:
        exists = await conn.fetchval("select to_regclass('tradebridge_schema_migrations')")
        applied = await _applied(conn) if exists else {}
    finally:
        await conn.close()
    states = []
    for migration in load_migrations():
        done = applied.get(migration.version)
        states.append(
            MigrationState(
                version=migration.version,
                name=migration.name,
                checksum=migration.checksum,
                applied_at=done["applied_at"] if done else None,
                checksum_matches=done is None or done["checksum"] == migration.checksum,
            )
        )
    return states


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch(
        "select version, name, checksum, applied_at from tradebridge_schema_migrations"
    )
    return {int(r["version"]): r for r in rows}


def _check_unchanged(migration: Migration, done: asyncpg.Record) -> None:
    if done["checksum"] != migration.checksum:
        raise MigrationFailed(
            f"migration {migration.version:04d}_{migration.name} was applied with checksum "
            f"{str(done['checksum'])[:12]} but the file now has {migration.checksum[:12]}: "
            "applied migrations must not change; add a new migration instead"
        )


def _state(migration: Migration, applied_at: datetime, *, now: bool = False) -> MigrationState:
    return MigrationState(
        version=migration.version,
        name=migration.name,
        checksum=migration.checksum,
        applied_at=applied_at,
        applied_now=now,
    )


async def _apply(conn: asyncpg.Connection, migration: Migration) -> MigrationState:
    """Run one migration and record it, in a savepoint of the run's transaction."""
    async with _failing_as(migration), conn.transaction():
        await conn.execute(migration.sql)
        applied_at = await conn.fetchval(
            "insert into tradebridge_schema_migrations (version, name, checksum) "
            "values ($1, $2, $3) returning applied_at",
            migration.version,
            migration.name,
            migration.checksum,
        )
    return _state(migration, applied_at, now=True)


async def _rerun(conn: asyncpg.Connection, migration: Migration) -> None:
    """Run an applied migration again (its file is idempotent), recording nothing."""
    async with _failing_as(migration), conn.transaction():
        await conn.execute(migration.sql)


@contextlib.asynccontextmanager
async def _failing_as(migration: Migration) -> AsyncIterator[None]:
    try:
        yield
    except asyncpg.PostgresError as e:
        label = f"{migration.version:04d}_{migration.name}"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MigrationFailed(f"migration {label} failed and was rolled back: {first}") from e
