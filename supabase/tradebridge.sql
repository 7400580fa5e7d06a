-- tradebridge on Supabase: its own database role, ownership, grants and row-level security.
--
-- Run it in the SQL editor (as `postgres`) AFTER `tradebridge db migrate` has created the
-- tables (docs/supabase.md, step 2), and again after any later migration: every statement is
-- idempotent. It also parses and runs on plain PostgreSQL, where the Supabase parts (the
-- `auth` schema, the `anon`/`authenticated`/`service_role` roles) are skipped when missing.
--
-- What it sets up:
--   * role `tradebridge` (LOGIN; set its password separately, never in this file), owning
--     every tradebridge table, sequence and function: an owner is not subject to RLS, so it
--     needs no policy, and it can run later migrations itself;
--   * table `account_owners` (account_name -> user_id): which signed-in user may trade which
--     account; an account has one owner; managed as `postgres` (or `tradebridge`), read-only
--     to app users;
--   * `trading_signals.user_id`, defaulting to auth.uid(): whose signal a row is;
--   * RLS and explicit grants on EVERY tradebridge table (Supabase's default privileges
--     grant everything on new tables to anon, authenticated and service_role: all of that
--     is revoked here, then only the grants below are given):
--       - authenticated: INSERT pending signals, strategy columns only (and status, which
--         must be 'pending': strategies written for the deployment tradebridge replaces send
--         it), for an account it owns, with a signal_id that starts with '<account_name>:'
--         (its namespace: nobody else can take an id it will need); cancel such a signal
--         while it is still pending (UPDATE of status, pending -> cancelled only: what the
--         old cancel_signal() did); SELECT the signals it inserted or that are on its
--         accounts, their order_history events, and its account_owners rows; nothing else,
--         no other UPDATE, never DELETE, nothing of broker_calls, webhook_alerts or
--         account_risk, nor of the kill switches (kill_switches, kill_switch_events:
--         `tradebridge kill`);
--       - service_role (bypasses RLS; server-side code only): INSERT and SELECT signals,
--         SELECT their history and the account map; no UPDATE or DELETE: results come from
--         tradebridge;
--       - anon and PUBLIC: nothing (tables, sequences, tradebridge's functions);
--   * a trigger that holds the API roles to exactly that whatever other policies allow (a
--     permissive policy of another program, e.g. the replaced deployment's "allow all to
--     authenticated", would otherwise widen the grants below): they insert rows as
--     'pending' only and change a status only from pending to cancelled. A WARNING names
--     every policy on these tables that is not tradebridge's (docs/migrating.md).

do $$
begin
    if to_regclass('trading_signals') is null
       or to_regclass('order_history') is null
       or to_regclass('broker_calls') is null
       or to_regclass('webhook_alerts') is null then
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

-- `postgres` must be a member to hand its objects over (and keeps managing them).
do $$
begin
    if not pg_has_role(current_user, 'tradebridge', 'MEMBER') then
        execute format('grant tradebridge to %I', current_user);
    end if;
end
$$;

grant usage, create on schema public to tradebridge;

-- Which signed-in user owns which account (only meaningful with Supabase Auth).
create table if not exists account_owners (
    account_name text primary key
        check (account_name <> '' and strpos(account_name, ':') = 0),
    user_id      uuid not null,
    created_at   timestamptz not null default now()
);
create index if not exists account_owners_user_idx on account_owners (user_id);

-- Every table tradebridge has; a test checks that no table of the schema is missing here.
create or replace function pg_temp.tradebridge_tables() returns text[]
language sql immutable
as $$
    select array['trading_signals', 'order_history', 'broker_calls', 'webhook_alerts',
                 'account_risk', 'account_owners', 'tradebridge_schema_migrations',
                 'kill_switches', 'kill_switch_events', 'notification_state',
                 'notified_signals', 'notifications', 'position_check_turns',
                 'position_checks', 'dashboard_logouts']
$$;

-- Ownership (with their sequences) and RLS on every table.
do $$
declare
    t text;
begin
    foreach t in array pg_temp.tradebridge_tables() loop
        if to_regclass(t) is not null then
            execute format('alter table %I owner to tradebridge', t);
            execute format('alter table %I enable row level security', t);
        end if;
    end loop;
end
$$;

-- What an app user may do to a signal, whatever policies allow: queue it as pending, and
-- cancel it while it is still pending. Everyone else (tradebridge, postgres, service_role)
-- passes. The lifecycle trigger (0001) still refuses illegal moves for every writer.
create or replace function tradebridge_signals_api_guard() returns trigger
language plpgsql
as $$
begin
    if current_user::text not in ('anon', 'authenticated') then
        return new;
    end if;
    if tg_op = 'INSERT' and new.status is distinct from 'pending' then
        raise exception 'an app user inserts signals as pending only (status %)',
            coalesce(new.status, 'null')
            using errcode = 'insufficient_privilege',
                  hint = 'leave status out, or send pending';
    end if;
    if tg_op = 'UPDATE' and not (old.status = 'pending' and new.status = 'cancelled') then
        raise exception 'an app user may only cancel a pending signal (% -> %)',
            old.status, coalesce(new.status, 'null')
            using errcode = 'insufficient_privilege',
                  hint = 'a claimed signal is cancelled at the broker, not in the table';
    end if;
    return new;
end
$$;

drop trigger if exists tradebridge_signals_api_guard on trading_signals;
create trigger tradebridge_signals_api_guard
    before insert or update on trading_signals
    for each row execute function tradebridge_signals_api_guard();

-- Functions: owned by tradebridge (later migrations replace them), executable by no one else
-- (their triggers fire for whoever writes the table: that needs no EXECUTE).
do $$
declare
    f regprocedure;
    r text;
begin
    for f in
        select p.oid::regprocedure from pg_proc p
         where p.pronamespace = 'public'::regnamespace and p.proname like 'tradebridge\_%'
    loop
        execute format('alter function %s owner to tradebridge', f);
        foreach r in array array['public', 'anon', 'authenticated', 'service_role'] loop
            if r = 'public' or exists (select 1 from pg_roles where rolname = r) then
                execute format('revoke all on function %s from %s', f, r);
            end if;
        end loop;
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

-- Nothing for anyone but the owner, then the explicit grants.
do $$
declare
    r text;
    t text;
begin
    foreach r in array array['public', 'anon', 'authenticated', 'service_role'] loop
        if r <> 'public' and not exists (select 1 from pg_roles where rolname = r) then
            continue;
        end if;
        foreach t in array pg_temp.tradebridge_tables() loop
            if to_regclass(t) is not null then
                execute format('revoke all on table %I from %s', t, r);
            end if;
        end loop;
        -- The tables' own sequences (owned by tradebridge since the tables are), no others.
        for t in
            select c.oid::regclass::text from pg_class c
             where c.relkind = 'S' and c.relowner = 'tradebridge'::regrole
        loop
            execute format('revoke all on sequence %s from %s', t, r);
        end loop;
    end loop;

    if exists (select 1 from pg_roles where rolname = 'service_role') then
        -- Server-side strategies with the service_role key (it bypasses RLS): queue signals
        -- and watch them; results are tradebridge's to write.
        grant select, insert on trading_signals to service_role;
        grant select on order_history, account_owners to service_role;
    end if;

    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        raise notice 'no role authenticated: skipping the app-user policies';
        return;
    end if;
    -- Column privileges: a user can only write what a strategy writes. Status, broker ids,
    -- fills, errors and timestamps come from their defaults, i.e. from tradebridge.
    -- status too, held to 'pending' by the policy and the guard: the replaced deployment's
    -- strategies send it, and without the privilege their insert fails with a permission
    -- error that does not name the column.
    grant insert (signal_id, strategy_name, instrument, side, order_type, quantity, price,
                  stop_loss, take_profit, stop_price, time_in_force, account_name, metadata,
                  status)
        on trading_signals to authenticated;
    -- Cancelling a pending signal (the policy below and the guard allow nothing else).
    grant update (status) on trading_signals to authenticated;
    grant select on trading_signals, order_history, account_owners to authenticated;

    if to_regprocedure('auth.uid()') is null then
        raise notice 'no function auth.uid(): skipping the app-user policies';
        return;
    end if;

    drop policy if exists tradebridge_signals_insert_own on trading_signals;
    -- The WITH CHECK repeats the column privileges in row terms: a row enters as pending,
    -- owned by its inserter, for an account mapped to the inserter, in that account's id
    -- namespace ('<account_name>:…', so no user can take an id another user needs), with no
    -- result of any kind.
    create policy tradebridge_signals_insert_own on trading_signals
        for insert to authenticated
        with check (
            user_id = auth.uid()
            and account_name is not null
            and exists (select 1 from account_owners o
                         where o.account_name = trading_signals.account_name
                           and o.user_id = auth.uid())
            and starts_with(signal_id, account_name || ':')
            and status = 'pending'
            and tradovate_order_id is null and account_id is null and error_message is null
            and client_order_id is null and claimed_by is null and claimed_at is null
            and coalesce(placement_attempts, 0) = 0 and coalesce(filled_qty, 0) = 0
            and avg_fill_price is null and ts_submitted is null and ts_final is null
        );

    -- An own signal that no worker has claimed may be cancelled (the replaced deployment's
    -- cancel_signal()); 0006's trigger records the event. A claimed one cannot: its order
    -- may be on its way, and the lifecycle trigger refuses processing -> cancelled.
    drop policy if exists tradebridge_signals_cancel_own on trading_signals;
    create policy tradebridge_signals_cancel_own on trading_signals
        for update to authenticated
        using (
            status = 'pending'
            and (user_id = auth.uid()
                 or exists (select 1 from account_owners o
                             where o.account_name = trading_signals.account_name
                               and o.user_id = auth.uid()))
        )
        with check (status = 'cancelled');

    -- Own rows: inserted by the user, or on an account mapped to the user (the webhook's
    -- and the CLI's rows of that account too).
    drop policy if exists tradebridge_signals_read_own on trading_signals;
    create policy tradebridge_signals_read_own on trading_signals
        for select to authenticated
        using (
            user_id = auth.uid()
            or exists (select 1 from account_owners o
                        where o.account_name = trading_signals.account_name
                          and o.user_id = auth.uid())
        );

    -- The events of the signals the user may read (trading_signals' policy applies inside).
    drop policy if exists tradebridge_history_read_own on order_history;
    create policy tradebridge_history_read_own on order_history
        for select to authenticated
        using (exists (select 1 from trading_signals s
                        where s.signal_id = order_history.signal_id));

    drop policy if exists tradebridge_account_owners_read_own on account_owners;
    create policy tradebridge_account_owners_read_own on account_owners
        for select to authenticated
        using (user_id = auth.uid());
end
$$;

-- Policies of other programs on tradebridge's tables: kept, but named. A permissive one adds
-- to what tradebridge's policies allow (policies are OR'ed): the replaced deployment's "allow
-- all to authenticated" lets every signed-in user read every row and queue on any account.
do $$
declare
    p record;
begin
    for p in
        select tablename, policyname, cmd, roles from pg_policies
         where schemaname = 'public' and tablename = any(pg_temp.tradebridge_tables())
           and policyname not like 'tradebridge\_%'
         order by tablename, policyname
    loop
        raise warning 'policy "%" on % (% to %) is not tradebridge''s: it adds to what '
                      'tradebridge''s policies allow; drop it unless you mean it '
                      '(docs/migrating.md)', p.policyname, p.tablename, p.cmd, p.roles;
    end loop;
end
$$;

-- Optional: let apps watch their statuses through Supabase Realtime (RLS-filtered per
-- subscriber; a hint for dashboards, never the signal path):
--   alter publication supabase_realtime add table trading_signals;
