"""Dashboard sessions ended by a logout (docs/dashboard.md "Logging in").

A session is a signed cookie valid on every process sharing the password until it expires;
its logout is recorded here until then, so no copy of the cookie outlives it.
"""

from __future__ import annotations

from datetime import datetime

from tradebridge.store.ledger.errors import store_errors
from tradebridge.store.ledger.pool import LedgerPool

_END_SQL = """
with gone as (delete from dashboard_logouts where until < now())
insert into dashboard_logouts (session_id, until) values ($1, $2)
on conflict (session_id) do nothing
"""
_ENDED_SQL = "select exists (select 1 from dashboard_logouts where session_id = $1)"


class DashboardQueries(LedgerPool):
    """Record and read dashboard logouts."""

    async def end_dashboard_session(self, session_id: str, until: datetime) -> None:
        """Record that ``session_id`` logged out; kept until its cookie expires."""
        with store_errors():
            await self._db.execute(_END_SQL, session_id, until)

    async def dashboard_session_ended(self, session_id: str) -> bool:
        """Return whether ``session_id`` logged out."""
        with store_errors():
            return bool(await self._db.fetchval(_ENDED_SQL, session_id))
