-- 0005_scale_out: more than one take profit, trailing stops, break-even (issue 9, item 3).
--
-- Additive and idempotent like 0002. A row carries these only for an entry whose bracket the
-- broker prices from the fill (native order strategies); the dispatcher denies them elsewhere
-- with a reason, and the webhook refuses them with a 400 where the account cannot place them.
-- See docs/ledger.md (columns) and docs/tradingview.md (scale-out).

-- Up to three take profits, each closing its own quantity: a JSON list of
-- {"ticks": n, "quantity": q} (ticks from the entry's fill). Replaces take_profit /
-- take_profit_ticks on the row (a row carries one form or the other).
alter table trading_signals add column if not exists take_profits jsonb;
-- A stop loss that follows the best price by this many ticks (instead of stop_loss /
-- stop_loss_ticks).
alter table trading_signals add column if not exists trailing_stop_ticks integer;
-- After the first take profit fills, move the stops of the rest to the entry's fill price.
alter table trading_signals add column if not exists breakeven boolean;
