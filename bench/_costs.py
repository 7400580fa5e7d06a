"""What a benchmark's work cost: CPU seconds from ``/proc``, and the bridge's SQL statements
as PostgreSQL counted them (``pg_stat_statements``).

The bench reads the counters as a role of its own (``BENCH_ROLE``), so its polling is not
counted as the bridge's statements; its backends are left out of PostgreSQL's CPU.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tradebridge.store.embedded import EmbeddedPostgres

BENCH_ROLE = "bench_observer"
BENCH_PASSWORD = "bench-observer-password"  # a throwaway local role
TICK = os.sysconf("SC_CLK_TCK")


# --- CPU from /proc ---------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    # Fields after the command name (which may hold spaces): [0] is field 3, "state".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_s(pid: int) -> float:
    """Return the user + system CPU seconds of a process and of its reaped children."""
    fields = _stat(pid)
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def kernel_cpu_s(pid: int) -> float:
    """Return the system (kernel) CPU seconds of a process and of its reaped children."""
    fields = _stat(pid)
    return (int(fields[12]) + int(fields[14])) / TICK


def cluster_cpu_s(postmaster: int, exclude: set[int]) -> float:
    """Return the CPU seconds of a PostgreSQL cluster: the postmaster, its reaped children,
    and its live children except ``exclude`` (the bench's own backends)."""
    total = process_cpu_s(postmaster)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            fields = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def postmaster_pid(postgres: EmbeddedPostgres) -> int:
    """Return the pid of the cluster's postmaster."""
    assert postgres.directory is not None
    return int((postgres.directory / "data" / "postmaster.pid").read_text().split()[0])


# --- statements ---------------------------------------------------------------------------


def with_statements(postgres: EmbeddedPostgres) -> None:
    """Start ``postgres`` (in a directory of the caller's: it is stopped and started again)
    with pg_stat_statements loaded and the bench's own role."""
    postgres.start()
    asyncio.run(_preload(postgres.url))
    postgres.stop()
    postgres.start()
    asyncio.run(_bench_role(postgres.url))


async def _preload(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        # Utility statements (BEGIN, COMMIT, asyncpg's reset query) are tracked by default.
        await conn.execute("alter system set shared_preload_libraries = 'pg_stat_statements'")
    finally:
        await conn.close()


async def _bench_role(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("create extension if not exists pg_stat_statements")
        await conn.execute(
            f"create role {BENCH_ROLE} login password '{BENCH_PASSWORD}' in role pg_read_all_stats"
        )
    finally:
        await conn.close()


def bench_url(postgres: EmbeddedPostgres) -> str:
    """Return the URL of the bench's own role (its statements are not the bridge's)."""
    return f"postgresql://{BENCH_ROLE}:{BENCH_PASSWORD}@127.0.0.1:{postgres.port}/postgres"


async def grant_reads(url: str) -> None:
    """Let the bench's role read the ledger's rows (once the bridge has migrated)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"grant select on trading_signals to {BENCH_ROLE}")
    finally:
        await conn.close()


async def bridge_statements(db: asyncpg.Connection) -> dict[int, tuple[str, int, float]]:
    """Return the bridge's statements so far: queryid → (text, calls, execution ms)."""
    records = await db.fetch(
        "select s.queryid, s.query, s.calls, s.total_exec_time from pg_stat_statements s "
        "join pg_roles r on r.oid = s.userid where r.rolname = 'postgres'"
    )
    return {
        int(r["queryid"]): (str(r["query"]), int(r["calls"]), float(r["total_exec_time"]))
        for r in records
    }


def statement_text(query: str) -> str:
    """Return a statement's text on one line (asyncpg's savepoints as one name)."""
    query = re.sub(r"__asyncpg_savepoint_[0-9a-f]+__", "__asyncpg_savepoint_N__", query)
    return re.sub(r"\s+", " ", query).strip()


@dataclass(frozen=True)
class Costs:
    """The CPU seconds and the bridge's statement calls at one moment."""

    bridge_s: float
    postgres_s: float
    statements: int

    def minus(self, before: Costs) -> Costs:
        """Return what was spent since ``before``."""
        return Costs(
            self.bridge_s - before.bridge_s,
            self.postgres_s - before.postgres_s,
            self.statements - before.statements,
        )


async def costs_now(db: asyncpg.Connection, bridge: int, postmaster: int) -> Costs:
    """Read the bridge process's and the cluster's CPU, and the bridge's statement calls."""
    own = {int(await db.fetchval("select pg_backend_pid()"))}
    calls = int(
        await db.fetchval(
            "select coalesce(sum(s.calls), 0) from pg_stat_statements s "
            "join pg_roles r on r.oid = s.userid where r.rolname = 'postgres'"
        )
    )
    return Costs(process_cpu_s(bridge), cluster_cpu_s(postmaster, own), calls)
