"""The broker factory: ``[tvbridge]`` settings from TOML and environment reach the adapter."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from _support.native import last_price, redis_client
from _support.rig import front, login, order, ticks
from tradebridge.brokers.auth import BridgeTokenManager, TokenManager
from tradebridge.brokers.factory import bridge_options, build_broker, build_tokens, build_tvbridge
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker
from tradebridge.config import Settings, load_settings
from tradebridge.domain.enums import Dialect, OrderType
from tradebridge.errors import BrokerRejected, ConfigError
from tradebridge.sim.config import SimConfig
from tradebridge.sim.server import SimServer
from tradebridge.store.tokens import TokenStore

__all__ = ["redis_client"]  # fixtures


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run every test without tradebridge variables and away from any tradebridge.toml."""
    for name in list(os.environ):
        if name.startswith("TRADEBRIDGE_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tradebridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_factory_tvbridge_toml_and_env_reach_adapter_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(
        tmp_path,
        '[tvbridge]\nbid_ask = "when_required"\nflatten = "market_order"\n'
        "poll_interval_s = 5\nlookup_absent_after_s = 7\n"
        '[tvbridge.headers]\nOrigin = "https://www.tradingview.com"\n'
        '[[accounts]]\nname = "DEMO0000001"\ndialect = "tvbridge"\n',
    )
    monkeypatch.setenv("TRADEBRIDGE_TVBRIDGE__POLL_INTERVAL_S", "0.25")  # env beats TOML
    monkeypatch.setenv("TRADEBRIDGE_TVBRIDGE__HISTORY_MAX_COUNT", "50")
    settings = load_settings(path)

    broker = build_broker(settings, "DEMO0000001", _NoTokens())
    try:
        assert isinstance(broker, TvBridgeBroker)
        options = broker.options
        assert (options.bid_ask, options.flatten) == ("when_required", "market_order")
        assert (options.poll_interval_s, options.history_max_count) == (0.25, 50)
        assert options.lookup_absent_after_s == 7
        assert dict(options.headers) == {"Origin": "https://www.tradingview.com"}
    finally:
        await broker.close()


@pytest.mark.parametrize(
    ("fields", "window"),
    [
        ({}, 10.0),  # both defaults
        ({"tradovate": {"lookup_absent_after_s": 3}}, 3.0),  # inherited
        ({"tradovate": {"lookup_absent_after_s": 3}, "tvbridge": {"lookup_absent_after_s": 0}}, 0),
    ],
)
def test_factory_bridge_lookup_window_inherits_tradovate_unless_set(
    fields: dict[str, object], window: float
) -> None:
    assert bridge_options(load_settings(**fields)).lookup_absent_after_s == window


@pytest.mark.parametrize(
    ("section", "value"),
    [("bid_ask", "sometimes"), ("flatten", "panic"), ("poll_interval_s", "0")],
)
def test_settings_tvbridge_invalid_value_config_error_names_field(section: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"tvbridge.{section}"):
        load_settings(tvbridge={section: value})


class _NoTokens:
    async def token(self, account_name: str) -> object:
        raise AssertionError("building an adapter must not fetch a token")

    async def after_refused(self, account_name: str, refused: object) -> object:
        raise AssertionError("unreachable")


@pytest.fixture
async def bid_ask_sim() -> AsyncIterator[SimServer]:
    """Start a simulator that refuses bridge orders without currentBid/currentAsk."""
    with SimServer(SimConfig(port=0, require_bid_ask=True)) as server:
        yield server


def _bridge_settings(sim: SimServer, policy: str) -> Settings:
    return load_settings(
        tradovate={"bridge_url": sim.url, "requests_per_s": 1000, "request_burst": 1000},
        tvbridge={"bid_ask": policy, "lookup_absent_after_s": 0},
        accounts=[{"name": "DEMO0000001", "dialect": "tvbridge"}],
    )


@pytest.mark.parametrize(
    ("policy", "order_type", "accepted"),
    [
        ("always", OrderType.MARKET, True),
        ("always", OrderType.LIMIT, True),
        ("when_required", OrderType.MARKET, True),
        ("when_required", OrderType.LIMIT, False),  # no bid/ask sent: this server wants them
        ("never", OrderType.MARKET, False),
    ],
)
async def test_factory_bid_ask_policy_from_settings_decides_what_is_sent(
    bid_ask_sim: SimServer,
    redis_client: aioredis.Redis,
    policy: str,
    order_type: OrderType,
    accepted: bool,
) -> None:
    await redis_client.set("token:DEMO0000001", await login(bid_ask_sim, Dialect.TVBRIDGE))
    settings = _bridge_settings(bid_ask_sim, policy)
    store = TokenStore(redis_client, settings.tokens)
    broker = build_tvbridge(settings, settings.account("DEMO0000001"), store)
    limit = ticks(last_price(bid_ask_sim, front()), -40) if order_type is OrderType.LIMIT else None
    command = order(f"tb-policy-{policy}-{order_type.value}", order_type, limit=limit)
    try:
        if accepted:
            assert await broker.submit(command)
        else:
            with pytest.raises(BrokerRejected, match=r"currentBid|currentAsk"):
                await broker.submit(command)
    finally:
        await broker.close()


@pytest.mark.parametrize(
    ("dialect", "credentials", "expected"),
    [
        ("tvbridge", {"bridge": {"login": "demo", "password": "demo"}}, BridgeTokenManager),
        ("native", {"native": {"name": "demo", "password": "demo"}}, TokenManager),
        ("native", {"bridge": {"login": "demo", "password": "demo"}}, TokenStore),
        ("tvbridge", {}, TokenStore),
    ],
)
async def test_factory_build_tokens_self_managed_only_for_matching_credentials(
    redis_client: aioredis.Redis, tmp_path: Path, dialect: str, credentials: dict, expected: type
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        tokens=credentials,
        accounts=[
            {"name": "DEMO0000001", "dialect": dialect, "user": "demo"},
            {"name": "DEMO0000002", "dialect": dialect, "user": "demo"},
        ],
    )
    store = TokenStore(redis_client, settings.tokens)

    tokens = build_tokens(settings, "DEMO0000001", store)
    try:
        assert type(tokens) is expected
        if expected is not TokenStore:
            assert tokens.keys == ["token:DEMO0000001", "token:DEMO0000002"]
    finally:
        await tokens.aclose()
