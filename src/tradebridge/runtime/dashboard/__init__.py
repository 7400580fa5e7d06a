"""The dashboard at ``/ui`` (docs/dashboard.md): signals live, a signal's trace, accounts,
health with the kill switch, latency. Served by ``serve`` and ``up`` on their HTTP port.

Server-rendered HTML; the signals page is kept current by server-sent events
(``/ui/signals/stream``: the table body again whenever it changes). Behind a login with the
password ``dashboard.password``; without one, every ``/ui`` path answers 404 saying how to
turn it on. Sessions are signed cookies (HttpOnly, SameSite=Strict, expiring), every POST
carries a CSRF token, login attempts are rate-limited per address (``_session.py``). Nothing
secret is rendered: alert payloads are stored masked, tokens are only described (state,
expiry), settings are never shown.

The kill switch buttons call the operator endpoints' own code (``OperatorActions``); a
cancel goes to the broker as ``tradebridge cancel`` does; the trace is the one
``tradebridge trace`` prints (``store/ledger/trace.py``).
"""

from tradebridge.runtime.dashboard.router import DashboardDeps, build_dashboard_router

__all__ = ["DashboardDeps", "build_dashboard_router"]
