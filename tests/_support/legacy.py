"""The deployment tradebridge replaces: its tables exactly as issue 11 (part B) gives them,
rows in each of its statuses, and its strategies' inserts and cancel (docs/migrating.md)."""

from __future__ import annotations

import asyncpg

# Supabase SQL of the previous deployment. Its policy names the role `authenticated`, which
# a Supabase project has; on a plain cluster it is made here first (roles are per cluster).
LEGACY_DDL = """
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
end
$$;

create table trading_signals (
    id uuid primary key default gen_random_uuid(),
    signal_id varchar(100) unique not null,
    strategy_name varchar(100) not null,
    created_at timestamptz default now(),
    updated_at timestamptz default now(),
    instrument varchar(50) not null,
    side varchar(10) not null check (side in ('buy', 'sell')),
    order_type varchar(20) not null default 'limit'
        check (order_type in ('market', 'limit', 'stop')),
    quantity integer not null check (quantity > 0),
    price decimal(12,2),
    stop_loss decimal(12,2) default 0.0,
    take_profit decimal(12,2) default 0.0,
    account_name varchar(100) not null,
    account_id varchar(50),
    status varchar(20) not null default 'pending',
    tradovate_order_id varchar(100),
    error_message text,
    placement_attempts integer default 0,
    last_attempt_at timestamptz,
    metadata jsonb default '{}',
    constraint trading_signals_status_check
        check (status in ('pending', 'processing', 'placed', 'failed', 'cancelled'))
);

create or replace function update_updated_at_column()
returns trigger as $$
begin
    new.updated_at = now();
    return new;
end;
$$ language plpgsql;

create trigger update_trading_signals_updated_at
    before update on trading_signals
    for each row execute function update_updated_at_column();

create table order_history (
    id uuid primary key default gen_random_uuid(),
    signal_id uuid references trading_signals(id) on delete cascade,
    event_type varchar(50) not null,
    event_data jsonb,
    created_at timestamptz default now()
);

alter table trading_signals enable row level security;
alter table order_history enable row level security;
create policy "Allow all for authenticated users" on trading_signals
    for all to authenticated using (true) with check (true);
create policy "Allow all for authenticated users" on order_history
    for all to authenticated using (true) with check (true);
"""

# Its strategies' insert: status always set, 0.0 for "no stop loss / take profit".
OLD_INSERT = """
insert into trading_signals (signal_id, strategy_name, instrument, side, order_type, quantity,
                             price, stop_loss, take_profit, account_name, status, metadata)
values ($1, $2, $3, $4, $5, $6, $7, 0.0, 0.0, $8, 'pending', '{}')
"""
# Its cancel_signal().
OLD_CANCEL = (
    "update trading_signals set status = 'cancelled' where signal_id = $1 and status = 'pending'"
)

# One row in each of the previous deployment's statuses: signal id -> (status, broker order).
LEGACY_ROWS: dict[str, tuple[str, str | None]] = {
    "old-pending": ("pending", None),
    "old-processing": ("processing", None),
    "old-placed": ("placed", "880001"),
    "old-failed": ("failed", None),
    "old-cancelled": ("cancelled", None),
}


async def create_legacy(
    url: str, *, rows: bool = True, account: str = "ACC1", instrument: str = "MNQZ5"
) -> None:
    """Create the previous deployment's tables at ``url``, with ``LEGACY_ROWS`` and their
    history (two events each, three for the placed row) unless ``rows`` is false."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(LEGACY_DDL)
        if not rows:
            return
        for signal_id, (status, order_id) in LEGACY_ROWS.items():
            await conn.execute(
                "insert into trading_signals (signal_id, strategy_name, instrument, side, "
                "order_type, quantity, price, account_name, status, tradovate_order_id, "
                "error_message, placement_attempts) "
                "values ($1, 'orb', $2, 'buy', 'limit', 2, 21000.25, $3, $4, $5, $6, $7)",
                signal_id,
                instrument,
                account,
                status,
                order_id,
                "Tradovate said no" if status == "failed" else None,
                1 if status in ("placed", "failed") else 0,
            )
        await conn.execute(
            "insert into order_history (signal_id, event_type, event_data) "
            "select id, 'created', jsonb_build_object('status', 'pending') "
            "from trading_signals"
        )
        await conn.execute(
            "insert into order_history (signal_id, event_type, event_data) "
            "select id, 'status_changed', jsonb_build_object('status', status) "
            "from trading_signals where status <> 'pending'"
        )
        await conn.execute(
            "insert into order_history (signal_id, event_type, event_data) "
            "select id, 'order_placed', jsonb_build_object('order_id', tradovate_order_id) "
            "from trading_signals where status = 'placed'"
        )
    finally:
        await conn.close()
