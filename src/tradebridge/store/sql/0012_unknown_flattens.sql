-- 0012_unknown_flattens: the claim's look for unknown flattens reads an index, not the table.
--
-- Idempotent like 0001. See docs/dispatcher.md ("Unknown outcomes"): an unknown flatten holds
-- back every later row of its account, plain orders too (run again, it would close what they
-- open). The claim asks for such rows at every call; almost always there is none, and this
-- partial index answers that from an empty index instead of a pass over the table.
create index if not exists trading_signals_unknown_flatten_idx
    on trading_signals (account_name) where status = 'unknown' and intent = 'flatten';
