-- 0013_inserted_pending: a row is inserted pending (or final), never in flight.
--
-- Idempotent like 0001. See docs/ledger.md ("Statuses"). `processing`, `submitted`,
-- `unknown`, `needs_review`, `working` and `partially_filled` say a worker holds the row or
-- its order is at the broker; only tradebridge's moves set them, each with the columns that
-- go with it (the claim, the write-ahead). A row inserted with one of them (a strategy
-- copying rows between tables, a hand-written insert) was nobody's claim: no recovery picks
-- it up (they go by claimed_at / claimed_by), and as the account's row "in flight" it held
-- back every later row of that account for good, a kill switch's flatten included. Such an
-- insert is refused, naming the row and what to insert instead. Final statuses stay
-- allowed (an import of history); 0006's guard already held app users to `pending`.

create or replace function tradebridge_signals_inserted_pending() returns trigger
language plpgsql
set search_path from current
as $$
begin
    if new.status in ('processing', 'submitted', 'unknown', 'needs_review', 'working',
                      'partially_filled') then
        raise exception 'signal %: a row is inserted as pending (or without a status), '
                        'not %: tradebridge sets that status when it takes the row',
            coalesce(new.signal_id, 'null'), new.status
            using errcode = 'TB412',
                  hint = 'insert it with status pending; see docs/ledger.md';
    end if;
    return new;
end
$$;

drop trigger if exists tradebridge_signals_inserted_pending on trading_signals;
create trigger tradebridge_signals_inserted_pending
    before insert on trading_signals
    for each row execute function tradebridge_signals_inserted_pending();
