-- 0002_intents: what a row asks for beyond one order, and the webhook intake's alert log.
--
-- Idempotent like 0001, and additive: existing rows get intent 'order', which is what every
-- row meant before this migration. See docs/ledger.md (intents) and docs/tradingview.md.

-- trading_signals: intents -------------------------------------------------------------------

-- 'order' | 'exit' | 'reverse' | 'cancel' | 'flatten' | 'target'. Deliberately no check
-- constraint: a row with an unknown intent is stored and then denied by the dispatcher with a
-- precise error_message, never refused at INSERT (a strategy's insert must not fail silently).
-- Adding it with a constant default is a catalogue change: existing rows read 'order' and are
-- never rewritten (0001's rule: a legacy row may break today's checks).
alter table trading_signals add column if not exists intent text not null default 'order';
alter table trading_signals alter column intent set default 'order';
do $$
begin
    -- A strategy's own table may already have a nullable intent column with nulls in it.
    if exists (select 1 from trading_signals where intent is null) then
        raise notice 'trading_signals.intent has nulls; left nullable (the dispatcher reads '
                     'null as order)';
    else
        alter table trading_signals alter column intent set not null;
    end if;
end
$$;
-- Signed position the strategy wants (intent 'target'); the dispatcher orders the difference.
alter table trading_signals add column if not exists target_position numeric;
-- Bracket distances in whole ticks from the entry's fill, an alternative to the absolute
-- stop_loss / take_profit prices (a row carries one form or the other, per leg).
alter table trading_signals add column if not exists stop_loss_ticks integer;
alter table trading_signals add column if not exists take_profit_ticks integer;
alter table trading_signals add column if not exists stop_price numeric;
-- The alert's {{close}}: informational, never sent as an order price.
alter table trading_signals add column if not exists reference_price numeric;

-- webhook_alerts -----------------------------------------------------------------------------

-- One row per authenticated alert the webhook received (accepted, stale or invalid), written
-- in the same transaction as its trading_signals rows. idempotency_key is unique, so a
-- resent alert finds its first delivery whatever process or restart received it.
create table if not exists webhook_alerts (
    id               bigserial primary key,
    idempotency_key  text unique,
    received_at      timestamptz not null default clock_timestamp(),
    source_ip        text,
    format           text,
    payload          jsonb,
    signal_ids       text[] not null default '{}',
    group_id         text,
    outcome          text not null
);
-- The fire time the alert carried ({{timenow}}), if any: received_at - fired_at is the
-- delivery latency.
alter table webhook_alerts add column if not exists fired_at timestamptz;
-- Why an alert was not accepted (stale, or the 400's message), null when accepted.
alter table webhook_alerts add column if not exists error text;
-- Alerts without a fire time dedupe on their body within a window: sha256 of the raw body.
alter table webhook_alerts add column if not exists body_sha256 text;

create index if not exists webhook_alerts_body_idx
    on webhook_alerts (body_sha256, received_at) where body_sha256 is not null;
create index if not exists webhook_alerts_received_idx on webhook_alerts (received_at);
