-- 0015_deleted_rows: a deleted row leaves a `deleted` event in its history.
--
-- Idempotent like 0001. See docs/ledger.md ("History"). order_history is append-only and
-- outlives its row, and a signal id can be inserted again once its row is deleted: the new
-- row's orders then carry the old row's client id (`tb-<signal_id>`). The event, with the
-- order the row held, marks where the old row's history ends, so that a lookup for the new
-- row never takes the old row's orders for its own (store/ledger/lookups.py, owned_orders).
-- SECURITY DEFINER: whoever may delete a row needs no right on order_history for it.

create or replace function tradebridge_signals_deleted() returns trigger
language plpgsql
security definer
set search_path from current
as $$
begin
    insert into order_history (signal_id, event, detail)
    values (old.signal_id, 'deleted', jsonb_strip_nulls(jsonb_build_object(
        'status', old.status,
        'broker_order_id', old.tradovate_order_id::text,
        'account_name', old.account_name,
        'by', session_user)));
    return old;
end
$$;

drop trigger if exists tradebridge_signals_deleted on trading_signals;
create trigger tradebridge_signals_deleted
    after delete on trading_signals
    for each row execute function tradebridge_signals_deleted();
