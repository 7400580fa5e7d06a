"""``run_doctor`` against the simulator and a real Redis: checks, verdicts, the probe."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from _support.fixtures import redis_client
from _support.rig import login
from tradebridge.config import Settings, load_settings
from tradebridge.doctor.diagnosis import FailedRequest, Status, Verdict, run_doctor
from tradebridge.domain.contracts import front_month
from tradebridge.domain.enums import Dialect
from tradebridge.sim.config import SimConfig
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client"]  # fixtures

FRONT = front_month("MNQ", datetime.now(UTC).date()).name
GOOD_FORM = (
    f"instrument={FRONT}&qty=1&side=buy&type=limit&limitPrice=100&durationType=Day"
    "&currentBid=21000&currentAsk=21000.25"
)


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[SimServer]:
    """Start a simulator; ``@pytest.mark.parametrize('sim', [{...}], indirect=True)`` configures."""
    fields: dict[str, Any] = getattr(request, "param", {})
    with SimServer(SimConfig(port=0, **fields)) as server:
        yield server


def _capitalised_type_request(sim: SimServer) -> FailedRequest:
    """Return a bridge order to D100001 that failed with ``type=Limit`` (reference §10.1)."""
    return FailedRequest.parse(
        f"POST {sim.url}/accounts/D100001/orders?locale=en",
        GOOD_FORM.replace("type=limit", "type=Limit"),
    )


def _settings(sim: SimServer, redis_server: EmbeddedRedis, account: str, **extra: Any) -> Settings:
    return load_settings(
        None,
        tradovate={"bridge_url": sim.url, "environment": "demo"},
        accounts=[{"name": account, "dialect": "tvbridge", **extra}],
        redis={"url": redis_server.url},
    )


async def _doctor(
    sim: SimServer,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    account: str,
    *,
    user: str,
    request: FailedRequest | None = None,
    probe: bool = False,
    token: bool = True,
) -> Any:
    if token:
        await redis_client.set(f"token:{account}", await login(sim, Dialect.TVBRIDGE, user))
    settings = _settings(sim, redis_server, account)
    store = TokenStore(redis_client, settings.tokens)
    return await run_doctor(settings, store, account, request=request, probe=probe)


@pytest.mark.parametrize("sim", [{"capitalised_enums": "http_404"}], indirect=True)
async def test_doctor_capitalised_type_on_404_bridge_names_enum_case(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    request = _capitalised_type_request(sim)

    report = await _doctor(
        sim, redis_server, redis_client, "DEMO0000001", user="demo", request=request
    )

    assert report.verdict is Verdict.ENUM_CASE
    assert "type=limit" in report.findings[0].fix


async def test_doctor_apex_name_in_path_names_account_name_used_as_id(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    request = FailedRequest.parse(
        f"POST {sim.url}/accounts/PAAPEX1361890000010/orders?locale=en", GOOD_FORM
    )

    report = await _doctor(
        sim, redis_server, redis_client, "PAAPEX1361890000010", user="apex", request=request
    )

    assert report.verdict is Verdict.ACCOUNT_NAME_USED_AS_ID
    assert report.findings[0].fix == "use id D200010 instead of PAAPEX1361890000010"


async def test_doctor_expired_mnqz5_names_instrument_unknown_or_expired(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    request = FailedRequest.parse(
        f"POST {sim.url}/accounts/D200010/orders?locale=en",
        GOOD_FORM.replace(f"instrument={FRONT}", "instrument=MNQZ5"),
    )

    report = await _doctor(
        sim, redis_server, redis_client, "PAAPEX1361890000010", user="apex", request=request
    )

    assert report.verdict is Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED
    assert FRONT in report.findings[0].fix


async def test_doctor_healthy_bridge_account_all_checks_pass_ok(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    report = await _doctor(sim, redis_server, redis_client, "PAAPEX1361890000010", user="apex")

    assert report.ok, report.checks
    assert report.verdict is Verdict.OK
    assert [c.name for c in report.checks] == [
        "redis",
        "token",
        "broker",
        "account",
        "contract",
        "bridge",
    ]
    account = next(c for c in report.checks if c.name == "account")
    assert "D200010" in account.detail


async def test_doctor_missing_token_fails_with_fix_and_stops(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    report = await _doctor(sim, redis_server, redis_client, "DEMO0000001", user="demo", token=False)

    assert [(c.name, c.status) for c in report.checks] == [
        ("redis", Status.PASS),
        ("token", Status.FAIL),
    ]
    assert "token:DEMO0000001" in report.checks[1].detail
    assert "run `tradebridge tokens serve`" in report.checks[1].fix
    assert "[[users]]" in report.checks[1].fix


async def test_doctor_expired_token_fails_saying_when(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    expired = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    await redis_client.set(
        "token:DEMO0000001",
        json.dumps({"kind": "tv", "accessToken": "x.y.z", "expirationTime": expired}),
    )

    report = await _doctor(sim, redis_server, redis_client, "DEMO0000001", user="demo", token=False)

    token = report.checks[1]
    assert (token.name, token.status) == ("token", Status.FAIL)
    assert "expired" in token.detail
    assert "run `tradebridge tokens serve`" in token.fix
    assert "x.y.z" not in json.dumps(report.to_json())


async def test_doctor_token_of_other_user_account_not_found(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    await redis_client.set("token:PAAPEX1361890000010", await login(sim, Dialect.TVBRIDGE, "demo"))

    report = await _doctor(
        sim, redis_server, redis_client, "PAAPEX1361890000010", user="demo", token=False
    )

    account = next(c for c in report.checks if c.name == "account")
    assert account.verdict is Verdict.ACCOUNT_ID_NOT_FOUND
    assert "D100001" in account.detail


@pytest.mark.parametrize("sim", [{"capitalised_enums": "http_404"}], indirect=True)
async def test_doctor_probe_finds_the_single_change_and_leaves_no_order(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    request = _capitalised_type_request(sim)

    report = await _doctor(
        sim, redis_server, redis_client, "DEMO0000001", user="demo", request=request, probe=True
    )

    probe = report.checks[-1]
    assert (probe.name, probe.status) == ("probe", Status.PASS)
    assert "type=Limit → HTTP 404" in probe.detail
    orders = sim.call(lambda: sim.ctx.engine.orders(100001))
    assert orders
    assert all(o.ord_status.value == "Canceled" for o in orders)


async def test_doctor_probe_on_live_environment_skipped(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis
) -> None:
    await redis_client.set("token:DEMO0000001", await login(sim, Dialect.TVBRIDGE, "demo"))
    settings = load_settings(
        None,
        tradovate={"bridge_url": sim.url, "environment": "live"},
        accounts=[{"name": "DEMO0000001", "dialect": "tvbridge"}],
    )
    store = TokenStore(redis_client, settings.tokens)

    report = await run_doctor(settings, store, "DEMO0000001", probe=True)

    assert report.checks[-1].status is Status.SKIP
    assert sim.call(lambda: sim.ctx.engine.orders(100001)) == []


@pytest.fixture
def not_a_bridge() -> Iterator[str]:
    """A web server that answers 404 on every path (a wrong ``tradovate.bridge_url``)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_doctor_bridge_host_answering_404_names_the_url_not_the_token(
    sim: SimServer,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    not_a_bridge: str,
) -> None:
    """A bridge_url whose host answers 404 everywhere is a wrong URL: the token is fine, and
    nothing about the bridge was checked, so the verdict is not OK."""
    await redis_client.set("token:DEMO0000001", await login(sim, Dialect.TVBRIDGE, "demo"))
    settings = load_settings(
        None,
        tradovate={"bridge_url": not_a_bridge, "environment": "demo"},
        accounts=[{"name": "DEMO0000001", "dialect": "tvbridge"}],
        redis={"url": redis_server.url},
    )

    report = await run_doctor(settings, TokenStore(redis_client, settings.tokens), "DEMO0000001")

    assert not report.ok
    assert report.verdict is Verdict.MALFORMED_URL, report.checks
    broker = next(c for c in report.checks if c.name == "broker")
    assert broker.status is Status.FAIL
    assert "bridge_url" in broker.fix
    assert "token" not in broker.fix
    assert not any(c.verdict is Verdict.OK for c in report.checks)
