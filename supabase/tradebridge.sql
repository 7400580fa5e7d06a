-- tradebridge on Supabase: its own database role, ownership, grants and row-level security.
--
-- Run it in the SQL editor (as `postgres`) AFTER `tradebridge db migrate` has created the
-- tables (docs/supabase.md, step 2), and again after any later migration: every statement is
-- idempotent. It also parses and runs on plain PostgreSQL, where the Supabase parts (the
-- `auth` schema, the `anon`/`authenticated` roles) are skipped when missing.
--
-- What it sets up:
--   * role `tradebridge` (LOGIN; set its password separately, never in this file), owning
--     the ledger tables: an owner is not subject to RLS, so it needs no policy of its own;
--   * `trading_signals.user_id`, defaulting to auth.uid(): whose signal a row is;
--   * RLS on every tradebridge table; app users (`authenticated`) may INSERT their own
--     signals, only pending and only with the strategy columns, and SELECT their own rows
--     and their history; they can never UPDATE or DELETE, nor read broker_calls;
--   * `anon` gets nothing.

do $$
begin
    if to_regclass('trading_signals') is null
       or to_regclass('order_history') is null
       or to_regclass('broker_calls') is null then
        raise exception 'tradebridge tables are missing: run `tradebridge db migrate` first';
    end if;
end
$$;

-- The role tradebridge connects as.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'tradebridge') then
        create role tradebridge login;
    end if;
end
$$;

-- `postgres` must be a member to hand its tables over (and keeps managing them).
do $$
begin
    if not pg_has_role(current_user, 'tradebridge', 'MEMBER') then
        execute format('grant tradebridge to %I', current_user);
    end if;
end
$$;

grant usage, create on schema public to tradebridge;

do $$
declare
    t text;
begin
    foreach t in array array['trading_signals', 'order_history', 'broker_calls',
                             'tradebridge_schema_migrations'] loop
        if to_regclass(t) is not null then
            execute format('alter table %I owner to tradebridge', t);
        end if;
    end loop;
end
$$;

-- Whose signal a row is. The default needs Supabase's auth.uid(); on plain PostgreSQL the
-- column stays without a default.
alter table trading_signals add column if not exists user_id uuid;
do $$
begin
    if to_regprocedure('auth.uid()') is not null then
        alter table trading_signals alter column user_id set default auth.uid();
    end if;
end
$$;
create index if not exists trading_signals_user_idx
    on trading_signals (user_id) where user_id is not null;

alter table trading_signals enable row level security;
alter table order_history enable row level security;
alter table broker_calls enable row level security;
do $$
begin
    if to_regclass('tradebridge_schema_migrations') is not null then
        alter table tradebridge_schema_migrations enable row level security;
    end if;
end
$$;

-- Privileges and policies for the Data API roles, where they exist.
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on trading_signals, order_history, broker_calls from anon;
    end if;

    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        raise notice 'no role authenticated: skipping the app-user policies';
        return;
    end if;

    revoke all on trading_signals, order_history, broker_calls from authenticated;
    -- Column privileges: a user can only write what a strategy writes. Status, broker ids,
    -- fills, errors and timestamps come from their defaults, i.e. from tradebridge.
    grant insert (signal_id, strategy_name, instrument, side, order_type, quantity, price,
                  stop_loss, take_profit, stop_price, time_in_force, account_name, metadata)
        on trading_signals to authenticated;
    grant select on trading_signals, order_history to authenticated;

    if to_regprocedure('auth.uid()') is null then
        raise notice 'no function auth.uid(): skipping the app-user policies';
        return;
    end if;

    drop policy if exists tradebridge_signals_insert_own on trading_signals;
    -- The WITH CHECK repeats the column privileges in row terms: a row enters as pending,
    -- owned by its inserter, with no result of any kind.
    create policy tradebridge_signals_insert_own on trading_signals
        for insert to authenticated
        with check (
            user_id = auth.uid()
            and status = 'pending'
            and tradovate_order_id is null and account_id is null and error_message is null
            and client_order_id is null and claimed_by is null and claimed_at is null
            and coalesce(placement_attempts, 0) = 0 and coalesce(filled_qty, 0) = 0
            and avg_fill_price is null and ts_submitted is null and ts_final is null
        );

    drop policy if exists tradebridge_signals_read_own on trading_signals;
    create policy tradebridge_signals_read_own on trading_signals
        for select to authenticated
        using (user_id = auth.uid());

    drop policy if exists tradebridge_history_read_own on order_history;
    create policy tradebridge_history_read_own on order_history
        for select to authenticated
        using (exists (select 1 from trading_signals s
                        where s.signal_id = order_history.signal_id
                          and s.user_id = auth.uid()));
end
$$;

-- Optional: let apps watch their statuses through Supabase Realtime (RLS-filtered per
-- subscriber; a hint for dashboards, never the signal path):
--   alter publication supabase_realtime add table trading_signals;
