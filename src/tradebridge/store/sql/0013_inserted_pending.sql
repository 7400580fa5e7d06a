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

create or replace function tradebridge_signals_before_update() returns trigger
language plpgsql
security definer
set search_path from current
as $$
begin
    -- E'\x0b' is VT: PostgreSQL's escapes have no \v.
    if new.account_name is distinct from btrim(new.account_name, E' \t\n\r\x0b\f') then
        new.account_name := btrim(new.account_name, E' \t\n\r\x0b\f');
    end if;
    if tg_op = 'INSERT' then
        if new.status in ('processing', 'submitted', 'unknown', 'needs_review', 'working',
                          'partially_filled') then
            raise exception 'signal %: a row is inserted as pending (or without a status), '
                            'not %: tradebridge sets that status when it takes the row',
                coalesce(new.signal_id, 'null'), new.status
                using errcode = 'TB412',
                      hint = 'insert it with status pending; see docs/ledger.md';
        end if;
        return new;
    end if;
    if new.status is distinct from old.status then
        if not tradebridge_status_move_allowed(old.status, new.status,
                                               old.ts_submitted is not null) then
            raise exception 'illegal status move % -> % for signal %',
                coalesce(old.status, 'null'), coalesce(new.status, 'null'), old.signal_id
                using errcode = 'TB409',
                      hint = 'statuses only move forward; see docs/ledger.md';
        end if;
        case new.status
            when 'pending' then
                new.claimed_by := null;
                new.claimed_at := null;
            when 'processing' then
                new.ts_claimed := clock_timestamp();
            when 'submitted' then
                new.ts_submitted := coalesce(old.ts_submitted, clock_timestamp());
                new.placement_attempts := coalesce(old.placement_attempts, 0) + 1;
                new.last_attempt_at := clock_timestamp();
            else
                null;
        end case;
        if new.status in ('working', 'partially_filled', 'filled') then
            new.ts_accepted := coalesce(old.ts_accepted, clock_timestamp());
        end if;
        if new.status in ('filled', 'cancelled', 'rejected', 'denied', 'failed', 'expired') then
            new.ts_final := clock_timestamp();
        end if;
    end if;
    new.updated_at := now();
    return new;
end
$$;
