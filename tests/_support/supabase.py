"""A plain PostgreSQL database set up as Supabase sets up a project, for the RLS tests.

What Supabase provides and the tests need: the API roles (``anon``, ``authenticated``,
``service_role``, the last with BYPASSRLS), the ``auth`` schema with ``auth.uid()`` reading the
JWT's subject claim, and Supabase's default privileges: everything on every new table,
sequence and function of ``public`` to the three API roles. With those defaults a table
nobody thought of is readable and writable by ``anon``, which is what the SQL must undo.
Roles are per cluster (hence the guards); default privileges are per database.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tradebridge.store.migrate import migrate

SUPABASE_SQL = (Path(__file__).parents[2] / "supabase" / "tradebridge.sql").read_text()
# The password the tests give the documented role (never one of a real deployment).
TRADEBRIDGE_PASSWORD = "tradebridge-role-test-password"

SUPABASE_STAND_IN = """
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
end
$$;
create schema auth;
create function auth.uid() returns uuid language sql stable as
    $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
grant usage on schema auth to authenticated, anon, service_role;
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public
    grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public
    grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public
    grant all on functions to anon, authenticated, service_role;
"""


async def set_up_supabase(url: str) -> None:
    """Turn the empty database at ``url`` into a migrated Supabase-like project with the SQL
    of ``supabase/tradebridge.sql`` applied and a password for the ``tradebridge`` role."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SUPABASE_STAND_IN)
        await migrate(url)
        await conn.execute(SUPABASE_SQL)
        await conn.execute(f"alter role tradebridge with password '{TRADEBRIDGE_PASSWORD}'")
    finally:
        await conn.close()


def as_tradebridge(url: str) -> str:
    """Return ``url`` with the documented role and its test password as the user."""
    parts = urlsplit(url)
    netloc = f"tradebridge:{TRADEBRIDGE_PASSWORD}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
