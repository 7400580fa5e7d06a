-- 0008_risk_rules: what the pre-trade rules read from the ledger (issue 13, docs/risk.md).
--
-- Additive and idempotent like 0002. Counts (open orders, orders per minute and per day,
-- the last entry on a root) come from trading_signals, so every worker sees the same; the
-- balance marks of the P&L rules live in account_risk, one row per account.

-- An account's orders by the time they were sent: orders per minute and per day, cooldowns.
create index if not exists trading_signals_account_submitted_idx
    on trading_signals (account_name, ts_submitted);

-- Per account: the trading day last seen, the balance (net liquidation value: cash and open
-- P&L) at its start, and the highest balances seen (any time: intraday; at the start of a
-- trading day: end of day). Written by the workers before an entry (Ledger.mark_balance).
create table if not exists account_risk (
    account_name         text primary key,
    trading_day          date not null,
    day_start_balance    numeric not null,
    high_water_intraday  numeric not null,
    high_water_eod       numeric not null,
    balance              numeric not null,
    updated_at           timestamptz not null default clock_timestamp()
);
