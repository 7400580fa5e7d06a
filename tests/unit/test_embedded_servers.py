"""The embedded servers start, answer and stop, as root or not."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from tradebridge.store.embedded import EmbeddedPostgres, EmbeddedRedis


async def test_redis_server_answers_ping(redis_server: EmbeddedRedis) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_postgres_server_answers_query(postgres_server: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(postgres_server.url)
    try:
        assert await conn.fetchval("select 40 + 2") == 42
    finally:
        await conn.close()


def test_postgres_keeps_its_data_across_restart() -> None:
    import asyncio
    import shutil
    import tempfile
    from pathlib import Path

    async def write_then_read(server: EmbeddedPostgres, write: bool) -> int:
        conn = await asyncpg.connect(server.url)
        try:
            if write:
                await conn.execute("create table t (v int); insert into t values (7)")
            return int(await conn.fetchval("select v from t"))
        finally:
            await conn.close()

    # pytest's tmp_path lives under a private (0700) root directory the postgres user
    # cannot enter, so use a directory of our own under /tmp.
    base = Path(tempfile.mkdtemp(prefix="tb-test-pg-"))
    base.chmod(0o755)
    directory = base / "pg"
    first = EmbeddedPostgres(directory=directory).start()
    try:
        assert asyncio.run(write_then_read(first, write=True)) == 7
    finally:
        first.stop()
    second = EmbeddedPostgres(directory=directory).start()
    try:
        assert asyncio.run(write_then_read(second, write=False)) == 7
    finally:
        second.stop()
        shutil.rmtree(base, ignore_errors=True)
