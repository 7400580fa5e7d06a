-- 0009_notifications: what the notifier told, and what it still has to (issue 14,
-- docs/notifications.md).
--
-- Additive and idempotent like 0002. Every worker sharing the database runs a notifier;
-- these tables make them tell each thing once between them:
-- * notification_state: one row per condition (a lockout, a kill switch …). Whoever moves
--   it (raised, reminded, resolved) in one statement sends that message; the others see
--   the move already made.
-- * notified_signals: each denied or rejected row, claimed once by whoever announces it.
-- * notifications: every send to every channel (the channel's name, never its URL), with
--   its outcome and the attempts it took.

create table if not exists notification_state (
    key           text primary key,
    kind          text not null,
    active        boolean not null,
    announced     boolean not null default false,  -- this episode's message went out
    fingerprint   text not null default '',
    summary       text not null default '',
    opened_at     timestamptz not null default clock_timestamp(),
    last_seen_at  timestamptz not null default clock_timestamp(),
    last_sent_at  timestamptz,
    resolved_at   timestamptz,
    last_phase    text,  -- raised | changed | reminder: the last message sent
    sender        text   -- the call that sent it (tells the winner of a race)
);

create table if not exists notified_signals (
    signal_id   text not null,
    status      text not null,
    claimed_at  timestamptz not null default clock_timestamp(),
    primary key (signal_id, status)
);

create table if not exists notifications (
    id          bigserial primary key,
    message_id  text not null,
    key         text not null,
    kind        text not null,
    phase       text not null,
    title       text not null,
    body        text not null,
    channel     text not null,
    outcome     text not null,  -- sent | failed | dropped
    attempts    integer not null,
    error       text,
    ts_queued   timestamptz not null,
    ts_done     timestamptz not null default clock_timestamp()
);
create index if not exists notifications_done_idx on notifications (ts_done);

-- The rows the notifier announces, by the time they became final: only denied and rejected
-- rows enter this index, so the order path's inserts do not pay for it.
create index if not exists trading_signals_verdict_idx
    on trading_signals (ts_final) where status in ('denied', 'rejected');
-- The rows reconcile corrected against the broker (event 'reconciled').
create index if not exists order_history_reconciled_idx
    on order_history (created_at) where event = 'reconciled';
