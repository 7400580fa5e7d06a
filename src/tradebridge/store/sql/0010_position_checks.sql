-- 0010_position_checks: reconcile's check of each account's positions against what
-- tradebridge's own orders explain (issue 14, docs/dispatcher.md "Positions").
--
-- Additive and idempotent like 0002.
-- * position_check_turns: one row per account; whoever moves its checked_at (one guarded
--   statement) checks the account this time: one check per interval between all workers.
--   baselined_at: when a first check completed (a contract first seen later starts from
--   nothing held besides tradebridge).
-- * position_checks: one row per account and contract.
--   - accepted: the broker's net position minus the signed fills of tradebridge's orders
--     (their rows' filled quantities and their bracket legs' fills), as accepted at the
--     first quiet check (what the account held before or besides tradebridge), after a
--     flatten, or by an operator (`tradebridge positions-accept`);
--   - broker_net / ours: what the last check read;
--   - diverged_since / divergence: set while the broker's position has moved by something
--     tradebridge's orders do not explain (a trade by hand, another tool, a lost fill), until
--     a check finds it explained again or an operator accepts it.

create table if not exists position_check_turns (
    account_name  text primary key,
    checked_at    timestamptz not null default clock_timestamp(),
    baselined_at  timestamptz  -- the first check that completed: what was held is accepted
);

create table if not exists position_checks (
    account_name    text not null,
    contract        text not null,
    accepted        numeric not null,
    broker_net      numeric not null,
    ours            numeric not null,
    checked_at      timestamptz not null default clock_timestamp(),
    accepted_at     timestamptz not null default clock_timestamp(),
    accepted_by     text not null,
    diverged_since  timestamptz,
    divergence      jsonb,
    primary key (account_name, contract)
);

-- Bracket legs' fills are written onto their entry's row (event 'leg_fill'), once per leg
-- and fill between all the workers that see it; the check sums them per account.
create unique index if not exists order_history_leg_fills
    on order_history (signal_id, (detail ->> 'order'), (detail ->> 'fill_id'))
    where event = 'leg_fill';
