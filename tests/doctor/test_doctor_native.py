"""``run_doctor`` for native accounts on the simulator (reference §10.1 last list, §2.7, §2.8)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from _support.fixtures import redis_client
from _support.native import login_json
from _support.rig import login
from tradebridge.brokers.http import BrokerCall, BrokerHttp
from tradebridge.config import load_settings
from tradebridge.doctor.diagnosis import DoctorReport, Status, Verdict, run_doctor
from tradebridge.domain.enums import Dialect
from tradebridge.sim.config import SimAccountConfig, SimConfig, SimUserConfig
from tradebridge.sim.server import SimServer
from tradebridge.store.embedded import EmbeddedRedis
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client"]  # fixtures

ACCOUNT = "DEMO0000001"


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[SimServer]:
    """Start a simulator; ``@pytest.mark.parametrize('sim', [{...}], indirect=True)`` configures."""
    fields: dict[str, Any] = getattr(request, "param", {})
    with SimServer(SimConfig(port=0, **fields)) as server:
        yield server


async def _doctor(
    sim: SimServer,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    data_dir: Path,
    *,
    symbol: str | None = None,
    environment: str = "demo",
    token: str | None = None,
    **tradovate: Any,
) -> DoctorReport:
    await redis_client.set(f"token:{ACCOUNT}", token or await login_json(sim))
    settings = load_settings(
        None,
        data_dir=data_dir,
        tradovate={"native_url": sim.url + "/v1", "environment": environment, **tradovate},
        accounts=[{"name": ACCOUNT, "dialect": "native"}],
        redis={"url": redis_server.url},
    )
    store = TokenStore(redis_client, settings.tokens)
    return await run_doctor(settings, store, ACCOUNT, symbol=symbol)


def _check(report: DoctorReport, name: str) -> Any:
    return next(c for c in report.checks if c.name == name)


async def test_doctor_native_healthy_account_checks_in_order_all_pass(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    report = await _doctor(sim, redis_server, redis_client, tmp_path)

    assert [(c.name, c.status) for c in report.checks] == [
        ("redis", Status.PASS),
        ("token", Status.PASS),
        ("broker", Status.PASS),
        ("account", Status.PASS),
        ("contract", Status.PASS),
    ]
    assert "contractId" in _check(report, "contract").detail


_READONLY_USERS = [
    SimUserConfig(
        id=1,
        name="demo",
        password="demo",
        accounts=[SimAccountConfig(id=100001, name=ACCOUNT, bridge_id="D100001", readonly=True)],
    )
]


@pytest.mark.parametrize("sim", [{"users": _READONLY_USERS}], indirect=True)
async def test_doctor_native_readonly_account_fails_with_fix(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    report = await _doctor(sim, redis_server, redis_client, tmp_path)

    account = _check(report, "account")
    assert account.status is Status.FAIL
    assert "READ-ONLY" in account.detail
    assert "cannot trade" in account.fix
    assert not report.ok


@pytest.mark.parametrize(
    ("symbol", "status", "needle"),
    [
        ("MNQ1!", Status.PASS, "contractId"),
        ("CME_MINI:NQ1!", Status.PASS, "contractId"),
        ("MNQZ5", Status.FAIL, "expired"),  # expired December 2025
        ("XYZ1!", Status.FAIL, "unknown product root"),
    ],
)
async def test_doctor_native_contract_resolved_or_explained(
    sim: SimServer,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    symbol: str,
    status: Status,
    needle: str,
) -> None:
    report = await _doctor(sim, redis_server, redis_client, tmp_path, symbol=symbol)

    contract = _check(report, "contract")
    assert contract.status is status
    assert needle in contract.detail
    if status is Status.FAIL:
        assert contract.verdict is Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED
        assert "front month" in contract.fix


async def test_doctor_native_expired_contract_suggests_front_month_without_asking_broker(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    calls: list[BrokerCall] = []

    def http_for(_dialect: Dialect) -> BrokerHttp:
        return BrokerHttp(sim.url + "/v1", dialect="native", listeners=(calls.append,))

    await redis_client.set(f"token:{ACCOUNT}", await login_json(sim))
    settings = load_settings(
        None,
        data_dir=tmp_path,
        tradovate={"native_url": sim.url + "/v1"},
        accounts=[{"name": ACCOUNT}],
    )
    report = await run_doctor(
        settings, TokenStore(redis_client, settings.tokens), ACCOUNT, symbol="MNQZ5",
        http_for=http_for,
    )  # fmt: skip

    front = sim.call(lambda: sim.ctx.engine.suggest_contracts("MNQ", 1)[0].name)
    assert front in _check(report, "contract").fix
    assert [c.path for c in calls] == ["/auth/me", "/account/list"]  # no contract/find


@pytest.mark.parametrize(
    ("device", "needle"),
    [
        ("file", "persisted in"),
        ("setting", "set in tradovate.device_id"),
        (None, "no deviceId persisted"),
    ],
)
async def test_doctor_native_live_reminds_2fa_and_shows_device_id_state(
    sim: SimServer,
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    device: str | None,
    needle: str,
) -> None:
    device_file = tmp_path / "device_id"
    extra: dict[str, Any] = {}
    if device == "file":
        device_file.write_text("0f2b0c9e-stable-device\n", encoding="utf-8")
    if device == "setting":
        extra["device_id"] = "configured-device"

    report = await _doctor(sim, redis_server, redis_client, tmp_path, environment="live", **extra)

    live = report.checks[-1]
    assert (live.name, live.status) == ("live", Status.WARN)
    assert "two-factor" in live.detail
    assert needle in live.detail
    assert "2FA email" in live.fix
    # doctor only looks: it neither creates nor rewrites the device id.
    if device == "file":
        assert device_file.read_text(encoding="utf-8") == "0f2b0c9e-stable-device\n"
    else:
        assert not device_file.exists()


async def test_doctor_native_demo_has_no_live_check(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    report = await _doctor(sim, redis_server, redis_client, tmp_path)

    assert "live" not in [c.name for c in report.checks]


async def test_doctor_native_account_with_bridge_token_warns_kind(
    sim: SimServer, redis_server: EmbeddedRedis, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    bridge_value = await login(sim, Dialect.TVBRIDGE)

    report = await _doctor(sim, redis_server, redis_client, tmp_path, token=bridge_value)

    token = _check(report, "token")
    assert token.status is Status.WARN
    assert "kind tv" in token.detail
    assert 'dialect = "tvbridge"' in token.fix
    assert json.loads(bridge_value)["accessToken"] not in json.dumps(report.to_json())
