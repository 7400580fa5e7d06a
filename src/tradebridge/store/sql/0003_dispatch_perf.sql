-- 0003_dispatch_perf: indexes for the reads the tracker and reconcile make per event / round.
--
-- Idempotent and additive (indexes only). Without them both reads scan the whole table, whose
-- size grows with every signal ever placed. See docs/dispatcher.md.

-- The tracker finds the row of a broker event by our client order id (unique index of 0001),
-- else by the broker's order id among open rows.
create index if not exists trading_signals_tradovate_order_idx
    on trading_signals (tradovate_order_id) where tradovate_order_id is not null;

-- Reconcile compares open rows idle for an interval with the broker's order reports.
create index if not exists trading_signals_open_idle_idx
    on trading_signals (updated_at) where status in ('working', 'partially_filled');
