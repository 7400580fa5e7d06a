-- 0014_dashboard_logouts: a dashboard session ends at its logout, on every process.
--
-- Idempotent like 0001. See docs/dashboard.md ("Logging in"). A session is a signed cookie
-- (runtime/dashboard/_session.py): it survives a restart and works on every process sharing
-- the password, so a logout that only deleted the browser's cookie left any copy of it (another
-- tab, a shared machine, a proxy's log) with the operator's power until it expired (8 hours by
-- default). The logout now records the session's id here until then; every page, stream and
-- action of a session checks it (one read by primary key).
create table if not exists dashboard_logouts (
    session_id text primary key,
    until      timestamptz not null
);
create index if not exists dashboard_logouts_until_idx on dashboard_logouts (until);
