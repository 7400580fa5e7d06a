"""The dashboard refuses hostile operator input with a 400 that names it: an age too large
for a datetime in ``since``, a NUL in a filter, a trace id or a kill switch reason. None of
them is a 500 (a traceback) or a 503 (which says the database failed: try again later)."""

from __future__ import annotations

from pathlib import Path

import pytest

from _support.dashboard import dashboard_settings, logged_in
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis


@pytest.mark.parametrize("since", ["99999999d", "9" * 400 + "s"])
async def test_dashboard_since_too_far_back_is_400(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path, since: str
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path,
                                  dispatcher={"workers": 0})  # fmt: skip
    async with logged_in(settings, fresh_db) as dash:
        page = await dash.client.get(f"{dash.base}/ui/signals", params={"since": since})
        stream = await dash.client.get(f"{dash.base}/ui/signals/stream", params={"since": since})
    assert page.status_code == 400, (page.status_code, page.text[:300])
    assert "too far back" in page.text
    assert stream.status_code == 400, (stream.status_code, stream.text[:300])
    assert "too far back" in stream.text
