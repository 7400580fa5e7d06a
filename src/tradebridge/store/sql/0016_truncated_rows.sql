-- 0016_truncated_rows: a truncated table leaves a `deleted` event for each of its rows too.
--
-- Idempotent like 0001. TRUNCATE fires no row trigger, so 0015's `deleted` event was missing
-- for rows emptied that way (a reset between sessions, a day's cleanup): a signal id inserted
-- again then took the old row's orders for its own (its client id `tb-<signal_id>`; see
-- 0015 and store/ledger/lookups.py, owned_orders). A statement trigger BEFORE the truncate
-- still sees every row and writes the same event for each. SECURITY DEFINER like 0015.

create or replace function tradebridge_signals_truncated() returns trigger
language plpgsql
security definer
set search_path from current
as $$
begin
    insert into order_history (signal_id, event, detail)
    select signal_id, 'deleted', jsonb_strip_nulls(jsonb_build_object(
        'status', status,
        'broker_order_id', tradovate_order_id::text,
        'account_name', account_name,
        'by', session_user,
        'truncated', true))
    from trading_signals
    order by signal_id;
    return null;
end
$$;

drop trigger if exists tradebridge_signals_truncated on trading_signals;
create trigger tradebridge_signals_truncated
    before truncate on trading_signals
    for each statement execute function tradebridge_signals_truncated();
