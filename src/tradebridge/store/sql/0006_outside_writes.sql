-- 0006_outside_writes: what other programs do to trading_signals is recorded like our moves,
-- and the claim's key is indexed whatever key the table came with (issue 11, part B).
--
-- Idempotent and additive like 0002. See docs/ledger.md and docs/migrating.md.

-- A pending row cancelled by a direct UPDATE (the previous deployment's cancel_signal():
-- `update trading_signals set status = 'cancelled' where status = 'pending'`, or an app user
-- under supabase/tradebridge.sql's policy) gets its 'cancelled' event in order_history, as a
-- move tradebridge makes does. tradebridge itself never moves pending -> cancelled, so no
-- move is recorded twice. A claimed row cannot be cancelled this way: the lifecycle trigger
-- refuses processing -> cancelled (its order may be on its way; cancel it at the broker).
-- SECURITY DEFINER: the writer may have no right to write order_history (an app user under
-- RLS); the function runs as its owner, with the search_path of this migration.
create or replace function tradebridge_signals_record_outside_cancel() returns trigger
language plpgsql
security definer
set search_path from current
as $$
begin
    insert into order_history (signal_id, event, detail)
    values (new.signal_id, 'cancelled',
            jsonb_build_object(
                'from', old.status, 'to', new.status, 'via', 'update',
                'by', coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
                'user_id', nullif(current_setting('request.jwt.claim.sub', true), '')));
    return null;
end
$$;

drop trigger if exists tradebridge_signals_outside_cancel on trading_signals;
create trigger tradebridge_signals_outside_cancel
    after update of status on trading_signals
    for each row when (old.status = 'pending' and new.status = 'cancelled')
    execute function tradebridge_signals_record_outside_cancel();

-- Claims find their rows by seq. 0001 made it the primary key where it created the table; a
-- table that came with a key of its own (the previous deployment's `id uuid`) had seq
-- without any index, and every claim scanned the table.
do $$
begin
    if not exists (
        select 1
          from pg_index i
          join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
         where i.indrelid = 'trading_signals'::regclass
           and i.indisunique and i.indnkeyatts = 1 and i.indpred is null
           and a.attname = 'seq'
    ) then
        create unique index trading_signals_seq_key on trading_signals (seq);
    end if;
end
$$;

-- The lifecycle trigger runs for whoever updates a row, and calls
-- tradebridge_status_move_allowed(), which the API roles may not execute
-- (supabase/tradebridge.sql revokes it): an app user's cancel of a pending row would fail
-- with "permission denied for function". The trigger runs as its owner instead; it reads
-- nothing of the writer's.
alter function tradebridge_signals_before_update() security definer;
alter function tradebridge_signals_before_update() set search_path from current;
