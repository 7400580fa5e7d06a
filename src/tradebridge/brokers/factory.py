"""Build the right adapter for a configured account, by its dialect.

One adapter serves one Tradovate user: its accounts share the token (reference §2.9, §9.3)
and the request budget. ``build_broker`` builds it for one account; the adapter also knows
the user's other configured accounts of the same dialect, so one instance can serve them.
"""

from __future__ import annotations

from tradebridge.brokers._http import BrokerHttp, RequestBudget, http_for
from tradebridge.brokers.base import Broker
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker, TvBridgeOptions
from tradebridge.config import AccountConfig, Settings
from tradebridge.domain.enums import Dialect
from tradebridge.domain.ids import AccountName
from tradebridge.store.tokens import (
    BridgeTokenManager,
    TokenManager,
    TokenProvider,
    TokenStore,
)


def same_user(settings: Settings, account: AccountConfig) -> list[AccountConfig]:
    """Return the configured accounts of the same user and dialect as ``account``."""
    if account.user is None:
        return [account]
    return [a for a in settings.accounts if a.user == account.user and a.dialect is account.dialect]


def bridge_http(settings: Settings) -> BrokerHttp:
    """Return the HTTP client of the TradingView bridge, with timeouts and request budget."""
    cfg = settings.tradovate
    return BrokerHttp(
        cfg.bridge_url,
        dialect=Dialect.TVBRIDGE.value,
        timeout_s=cfg.request_timeout_s,
        connect_timeout_s=cfg.connect_timeout_s,
        budget=RequestBudget(cfg.requests_per_s, cfg.request_burst),
    )


def bridge_options(settings: Settings) -> TvBridgeOptions:
    """Return the bridge adapter's options from ``[tvbridge]`` (and the shared lookup window)."""
    bridge = settings.tvbridge
    window = bridge.lookup_absent_after_s
    return TvBridgeOptions(
        bid_ask=bridge.bid_ask,
        flatten=bridge.flatten,
        poll_interval_s=bridge.poll_interval_s,
        lookup_absent_after_s=(
            settings.tradovate.lookup_absent_after_s if window is None else window
        ),
        lookup_poll_s=bridge.lookup_poll_s,
        lookup_slack_s=bridge.lookup_slack_s,
        lookup_baseline=bridge.lookup_baseline,
        cache_ttl_s=bridge.cache_ttl_s,
        history_max_count=bridge.history_max_count,
        headers=dict(bridge.headers),
    )


def build_tvbridge(
    settings: Settings,
    account: AccountConfig,
    tokens: TokenProvider,
    *,
    options: TvBridgeOptions | None = None,
) -> TvBridgeBroker:
    """Build the bridge adapter for ``account`` (and its user's other bridge accounts)."""
    cfg = settings.tradovate
    opts = options or bridge_options(settings)
    return TvBridgeBroker(
        bridge_http(settings),
        tokens,
        token_account=AccountName(account.name),
        accounts={AccountName(a.name): a.bridge_id for a in same_user(settings, account)},
        user=account.user or account.name,
        options=opts,
        retry=cfg.retry,
    )


def build_native(settings: Settings, account: AccountConfig, tokens: TokenProvider) -> Broker:
    """Build the native adapter for ``account`` (and its user's other native accounts)."""
    from tradebridge.brokers.tradovate import TradovateBroker

    return TradovateBroker(settings.tradovate, same_user(settings, account), tokens)


def build_broker(settings: Settings, account_name: str, tokens: TokenProvider) -> Broker:
    """Build the adapter of a configured account by its dialect; ``ConfigError`` if unknown."""
    account = settings.account(account_name)
    if account.dialect is Dialect.TVBRIDGE:
        return build_tvbridge(settings, account, tokens)
    return build_native(settings, account, tokens)


def build_tokens(
    settings: Settings, account_name: str, store: TokenStore
) -> TokenStore | TokenManager | BridgeTokenManager:
    """Return the account's token source: a self-managed login if configured, else Redis.

    ``[tokens.bridge]`` credentials serve bridge accounts, ``[tokens.native]`` native ones;
    the token is written under the keys of every configured account of the same user.
    Close what it returns with ``aclose()`` (a manager owns an HTTP client).
    """
    account = settings.account(account_name)
    names = [a.name for a in same_user(settings, account)]
    cfg = settings.tradovate
    if account.dialect is Dialect.TVBRIDGE and settings.tokens.bridge is not None:
        return BridgeTokenManager(
            store, bridge_http(settings), settings.tokens.bridge, account_names=names,
            environment=cfg.environment.value, retry=cfg.retry,
        )  # fmt: skip
    if account.dialect is Dialect.NATIVE and settings.tokens.native is not None:
        return TokenManager(
            store, http_for(cfg, "native"), settings.tokens.native,
            device_id=settings.device_id(), account_names=names,
            environment=cfg.environment.value, retry=cfg.retry,
        )  # fmt: skip
    return store
