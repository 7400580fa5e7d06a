-- 0011_account_queues: one broker account is one queue.
--
-- Idempotent like 0001. See docs/ledger.md ("Claims and per-account order").
--
-- * account_name is stored without surrounding blanks (space, tab, CR, LF, VT, FF:
--   pipeline/validate.py's ACCOUNT_NAME_BLANKS, the same set). Validation places
--   'DEMO0000001 ' on DEMO0000001, while the claim, held_back, the risk rules' counts, the
--   position check and the lookups' owned orders compare the column as it is: an entry stored
--   as 'DEMO0000001 ' and an exit as 'DEMO0000001' were two queues of one account, claimed
--   together and placed side by side (the exit denied "no position", the entry's position
--   left open). Trimmed where it is written, every reader sees one account. Letter case is
--   kept: validation does not fold it (another case is an unknown account, denied).
--   The trim lives in the lifecycle trigger, which now also fires on INSERT: `db migrate`
--   already verifies that trigger is present and enabled, so it verifies this too.
-- * (The claim's own fix, in store/ledger/claims.py: a pending row without a signal_id, a
--   legacy row adopted while trading_signals_signal_id_present stays NOT VALID, no longer
--   holds back its account's later rows. It is never placed; it is left as it is.)

-- 0001's lifecycle trigger, trimming account_name first (on INSERT too, then nothing else).
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

drop trigger if exists tradebridge_signals_before_update on trading_signals;
create trigger tradebridge_signals_before_update
    before insert or update on trading_signals
    for each row execute function tradebridge_signals_before_update();

-- Rows stored before: trimmed, whatever their status (the risk rules and the position check
-- count final rows too). Rows without a signal_id are left as they are (never placed; the
-- NOT VALID check refuses an update that keeps signal_id null).
do $$
begin
    update trading_signals
       set account_name = btrim(account_name, E' \t\n\r\x0b\f')
     where signal_id is not null
       and account_name <> btrim(account_name, E' \t\n\r\x0b\f');
exception when check_violation or unique_violation then
    raise exception 'trading_signals: account names with surrounding blanks could not be '
                    'trimmed (%); resolve that, then migrate again (it trims them)', sqlerrm
        using errcode = 'TB411';
end
$$;
