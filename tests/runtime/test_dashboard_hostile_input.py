"""The dashboard refuses hostile operator input with a 400 that names it: an age too large
for a datetime in ``since``, a NUL in a filter, a trace id or a kill switch reason. None of
them is a 500 (a traceback) or a 503 (which says the database failed: try again later)."""

from __future__ import annotations

from pathlib import Path

import pytest

from _support.dashboard import csrf_of, dashboard_settings, logged_in
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


async def test_dashboard_nul_in_a_filter_a_trace_id_or_a_reason_is_400_not_503(
    sim_tokens: SimServer, fresh_db: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = dashboard_settings(sim_tokens, fresh_db, redis_server.url, tmp_path,
                                  dispatcher={"workers": 0})  # fmt: skip
    async with logged_in(settings, fresh_db) as dash:
        client, base = dash.client, dash.base
        csrf = csrf_of((await client.get(f"{base}/ui/health")).text)
        answers = {
            "filter": await client.get(f"{base}/ui/signals", params={"account": "A\x00"}),
            "stream": await client.get(f"{base}/ui/signals/stream", params={"account": "A\x00"}),
            "trace": await client.get(f"{base}/ui/trace/s%00"),
            "kill": await client.post(
                f"{base}/ui/kill", data={"csrf": csrf, "reason": "oops\x00", "confirm": "yes"}
            ),
        }
        switches = await dash.ledger.kill_switches()
    for what, answer in answers.items():
        assert answer.status_code == 400, (what, answer.status_code, answer.text[-300:])
        assert "NUL characters" in answer.text, (what, answer.text[-300:])
    assert not switches.global_on
