"""Build the right adapter for a configured account, by its dialect.

One adapter serves one Tradovate user: its accounts share the token (reference §2.9, §9.3)
and the request budget. ``build_broker`` builds it for one account; the adapter also knows
the user's other configured accounts of the same dialect, so one instance can serve them.
"""

from __future__ import annotations

from tradebridge.brokers._http import BrokerHttp, RequestBudget
from tradebridge.brokers.base import Broker
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker, TvBridgeOptions
from tradebridge.config import AccountConfig, Settings
from tradebridge.domain.enums import Dialect
from tradebridge.domain.ids import AccountName
from tradebridge.store.tokens import TokenProvider


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


def build_tvbridge(
    settings: Settings,
    account: AccountConfig,
    tokens: TokenProvider,
    *,
    options: TvBridgeOptions | None = None,
) -> TvBridgeBroker:
    """Build the bridge adapter for ``account`` (and its user's other bridge accounts)."""
    cfg = settings.tradovate
    opts = options or TvBridgeOptions(lookup_absent_after_s=cfg.lookup_absent_after_s)
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
