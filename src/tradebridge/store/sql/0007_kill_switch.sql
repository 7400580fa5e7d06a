-- 0007_kill_switch: the kill switch lives in the database, global and per account, with who
-- threw it, when and why (issue 13), so that a restart keeps it and every process sees it.
--
-- Idempotent and additive like 0002. See docs/kill-switch.md.

-- One row per switch ever thrown: scope 'global' (every account) or 'account:<name>'. A row
-- is never deleted by tradebridge: `resume` sets engaged = false and says who and why.
create table if not exists kill_switches (
    scope       text primary key
        check (scope = 'global' or (scope like 'account:_%')),
    engaged     boolean not null,
    reason      text,
    changed_by  text not null,
    via         text not null default 'sql',
    changed_at  timestamptz not null default clock_timestamp()
);

-- Every kill and resume as it was asked (append-only): the flatten it queued, if any.
create table if not exists kill_switch_events (
    id          bigserial primary key,
    scope       text not null
        check (scope = 'global' or (scope like 'account:_%')),
    engaged     boolean not null,
    flatten     boolean not null default false,
    signal_ids  text[] not null default '{}',
    reason      text,
    changed_by  text not null,
    via         text not null,
    changed_at  timestamptz not null default clock_timestamp()
);
create index if not exists kill_switch_events_scope_idx on kill_switch_events (scope, id);

drop trigger if exists tradebridge_kill_switch_events_append_only on kill_switch_events;
create trigger tradebridge_kill_switch_events_append_only
    before update or delete on kill_switch_events
    for each row execute function tradebridge_append_only();

-- Every worker and webhook process LISTENs on this channel and reads the switches again at
-- once; whoever writes the table (tradebridge, or an UPDATE by hand) wakes them. Polling
-- (serve.kill_switch_poll_s) covers a notification that is lost.
create or replace function tradebridge_kill_switches_notify() returns trigger
language plpgsql
as $$
begin
    perform pg_notify('tradebridge_kill_switch', coalesce(new.scope, old.scope));
    return null;
end
$$;

drop trigger if exists tradebridge_kill_switches_notify on kill_switches;
create trigger tradebridge_kill_switches_notify
    after insert or update or delete on kill_switches
    for each row execute function tradebridge_kill_switches_notify();
