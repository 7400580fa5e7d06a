-- 0004_exactly_once: a row never points at an order that is not its own, and an unknown
-- outcome that lookups cannot settle becomes a visible state instead of blocking forever.
--
-- * status 'needs_review': an 'unknown' row still unresolved (ambiguous or failing lookups)
--   past dispatcher.unknown_bound_s. It blocks nothing and is never resent; reconcile keeps
--   looking and adopts what is provably its own, else a human decides.
-- * one ledger row per broker order: a unique index on (account_name, tradovate_order_id) for
--   the rows tradebridge placed (client_order_id set; legacy rows of other tools are exempt).
-- See docs/ledger.md and docs/dispatcher.md.

create or replace function tradebridge_status_move_allowed(
    old_status text, new_status text, was_submitted boolean
) returns boolean
language sql immutable
as $$
    select coalesce(case old_status
        when 'pending' then new_status in ('processing', 'denied', 'cancelled')
        when 'processing' then new_status in ('submitted', 'denied', 'failed')
                               or (new_status = 'pending' and not was_submitted)
        when 'submitted' then new_status in ('unknown', 'working', 'partially_filled', 'filled',
                                             'cancelled', 'rejected', 'expired', 'failed')
        when 'unknown' then new_status in ('submitted', 'working', 'partially_filled', 'filled',
                                           'cancelled', 'rejected', 'expired', 'failed',
                                           'needs_review')
        when 'needs_review' then new_status in ('working', 'partially_filled', 'filled',
                                                'cancelled', 'rejected', 'expired', 'failed')
        when 'working' then new_status in ('partially_filled', 'filled', 'cancelled',
                                           'rejected', 'expired')
        when 'partially_filled' then new_status in ('filled', 'cancelled', 'rejected',
                                                    'expired')
        else false
    end, false)
$$;

-- The status check of 0001 gains 'needs_review' (dropped and re-added NOT VALID, then
-- validated: every existing status is still allowed, so validation cannot fail).
alter table trading_signals drop constraint if exists trading_signals_status_check;
alter table trading_signals add constraint trading_signals_status_check check (
    coalesce(status in ('pending', 'processing', 'submitted', 'unknown', 'needs_review',
                        'working', 'partially_filled', 'filled', 'cancelled', 'rejected',
                        'denied', 'failed', 'expired'), false)
) not valid;
do $$
begin
    alter table trading_signals validate constraint trading_signals_status_check;
exception when check_violation then
    raise notice 'existing rows of trading_signals break trading_signals_status_check; it '
                 'stays NOT VALID (new and updated rows are checked)';
end
$$;

-- Rows that block position-based intents of their account, and the review queue.
create index if not exists trading_signals_account_unresolved_idx
    on trading_signals (account_name) where status in ('unknown', 'needs_review');

-- One ledger row per broker order. Refuse to build it over existing duplicates with a message
-- that names them, instead of PostgreSQL's bare unique violation.
do $$
declare
    dupes text;
begin
    select string_agg(format('%s/%s: %s', account_name, tradovate_order_id, ids), '; ')
      into dupes
      from (select account_name, tradovate_order_id,
                   string_agg(signal_id, ', ' order by seq) as ids
              from trading_signals
             where tradovate_order_id is not null and client_order_id is not null
             group by account_name, tradovate_order_id
            having count(*) > 1
             limit 20) d;
    if dupes is not null then
        raise exception 'trading_signals: broker orders referenced by several rows (%); '
                        'decide which row owns each order, clear tradovate_order_id on the '
                        'others, then migrate again', dupes
            using errcode = 'TB410';
    end if;
end
$$;
create unique index if not exists trading_signals_account_order_key
    on trading_signals (account_name, tradovate_order_id)
    where tradovate_order_id is not null and client_order_id is not null;
