"""Logging out of the dashboard ends the session (docs/dashboard.md: "you are in until you log
out or the session ends"): a copy of the session cookie taken before the logout (another tab,
a shared machine, a proxy's log) opens no page, no live stream and throws no kill switch."""

from __future__ import annotations

from pathlib import Path

import httpx

from _support.dashboard import csrf_of, dashboard_settings, login
from _support.runtime import serving
from tradebridge.runtime.dashboard._session import SESSION_COOKIE
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis


async def test_a_session_cookie_copied_before_logout_is_refused_after_it(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path,
                                  dispatcher={"workers": 0})  # fmt: skip
    async with serving(settings) as found, httpx.AsyncClient(timeout=10) as client:
        base = found.http_url
        await login(client, base)
        copied = client.cookies.get(SESSION_COOKIE, path="/ui")
        assert copied
        signals = await client.get(f"{base}/ui/signals")
        csrf = csrf_of(signals.text)
        logout = await client.post(f"{base}/ui/logout", data={"csrf": csrf})
        assert logout.status_code == 303
        async with httpx.AsyncClient(timeout=10, cookies={SESSION_COOKIE: copied}) as other:
            page = await other.get(f"{base}/ui/signals")
            stream = await other.get(f"{base}/ui/signals/stream")
            kill = await other.post(f"{base}/ui/kill", data={"csrf": csrf, "confirm": "yes"})
            state = await other.get(f"{base}/healthz")
    assert page.status_code == 303, "the logged-out session still opens the signals page"
    assert stream.status_code == 401, "the logged-out session still opens the live stream"
    assert kill.status_code == 401, "the logged-out session still throws the kill switch"
    assert state.json()["checks"]["kill_switch"]["level"] == "ok"
