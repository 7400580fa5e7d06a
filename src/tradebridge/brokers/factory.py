"""Build the right adapter for a configured account, by its dialect.

One adapter serves one Tradovate user: its accounts share the token (reference §2.9, §9.3)
and the request budget. ``build_broker`` builds it for one account; the adapter also knows
the user's other configured accounts of the same dialect, so one instance can serve them.

An account's user is its ``user`` setting, else the user of its dialect's self-managed
credentials (``[tokens.native]`` / ``[tokens.bridge]``): those credentials can only obtain
that user's token. ``build_account_tokens`` gives every configured account its token source
for a running process: one manager per self-managed user, Redis for the others.
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from tradebridge.brokers.auth import AccountTokens, BridgeTokenManager, SelfManaged, TokenManager
from tradebridge.brokers.base import Broker, BrokerCapabilities
from tradebridge.brokers.http import BrokerHttp, RequestBudget, http_for
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker, TvBridgeOptions
from tradebridge.config import AccountConfig, Settings
from tradebridge.domain.enums import Dialect
from tradebridge.domain.ids import AccountName
from tradebridge.obs.logging import get_logger
from tradebridge.store.tokens import TokenProvider, TokenStore

_log = get_logger("tradebridge.brokers.factory")


def credentials_user(settings: Settings, dialect: Dialect) -> str | None:
    """Return the user of the dialect's self-managed credentials, or None if none are set."""
    if dialect is Dialect.TVBRIDGE:
        bridge = settings.tokens.bridge
        return bridge.login if bridge is not None else None
    native = settings.tokens.native
    return native.name if native is not None else None


def token_user(settings: Settings, account: AccountConfig) -> str | None:
    """Return the Tradovate user whose token serves ``account`` (None: unknown)."""
    return account.user or credentials_user(settings, account.dialect)


def lockout_user(settings: Settings, account: AccountConfig) -> str:
    """Return the name ``account``'s lockouts (and its adapter) are kept under."""
    return token_user(settings, account) or f"account:{account.name}"


def is_self_managed(settings: Settings, account: AccountConfig) -> bool:
    """Return whether tradebridge logs in itself for ``account`` (its user's credentials)."""
    user = credentials_user(settings, account.dialect)
    return user is not None and token_user(settings, account) == user


def same_user(settings: Settings, account: AccountConfig) -> list[AccountConfig]:
    """Return the configured accounts of the same user and dialect as ``account``."""
    user = token_user(settings, account)
    if user is None:
        return [account]
    return [
        a
        for a in settings.accounts
        if a.dialect is account.dialect and token_user(settings, a) == user
    ]


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


def dialect_capabilities(dialect: Dialect) -> BrokerCapabilities:
    """Return what the adapter of ``dialect`` can do, without building one."""
    if dialect is Dialect.TVBRIDGE:
        return TvBridgeBroker.capabilities
    from tradebridge.brokers.tradovate import TradovateBroker

    return TradovateBroker.capabilities


def build_broker(settings: Settings, account_name: str, tokens: TokenProvider) -> Broker:
    """Build the adapter of a configured account by its dialect; ``ConfigError`` if unknown."""
    account = settings.account(account_name)
    if account.dialect is Dialect.TVBRIDGE:
        return build_tvbridge(settings, account, tokens)
    return build_native(settings, account, tokens)


def lockout_users(settings: Settings) -> Callable[[str], str | None]:
    """Return the account name -> user mapping a ``TokenStore`` checks lockouts with."""
    users = {a.name: lockout_user(settings, a) for a in settings.accounts}
    return lambda name: users.get(name, f"account:{name}")


def build_tokens(
    settings: Settings, account_name: str, store: TokenStore
) -> TokenStore | TokenManager | BridgeTokenManager:
    """Return the account's token source: a self-managed login if configured, else Redis.

    ``[tokens.bridge]`` credentials serve bridge accounts, ``[tokens.native]`` native ones,
    of their user (an account whose ``user`` names someone else reads Redis); the token is
    written under the keys of every configured account of the same user. Either source
    refuses while the user is locked out. Close it with ``aclose()`` (a manager owns an
    HTTP client).
    """
    account = settings.account(account_name)
    store = store.with_users(lockout_users(settings))
    if is_self_managed(settings, account):
        return _manager(settings, account, store)
    return store


def _manager(settings: Settings, account: AccountConfig, store: TokenStore) -> SelfManaged:
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
    raise AssertionError(f"no credentials for {account.name}")  # is_self_managed said so


def build_account_tokens(settings: Settings, redis: aioredis.Redis) -> AccountTokens:
    """Return every configured account's token source: one manager per self-managed user.

    Accounts of a user with credentials share one manager (one login, one renewal, written
    under all their keys); the others read Redis. Every source checks the user's lockout.
    """
    store = TokenStore(
        redis, settings.tokens, key_for=settings.token_key, user_for=lockout_users(settings)
    )
    managers: dict[str, SelfManaged] = {}
    by_user: dict[tuple[Dialect, str], SelfManaged] = {}
    for account in settings.accounts:
        if not is_self_managed(settings, account):
            user = credentials_user(settings, account.dialect)
            if user is not None:
                _log.warning(
                    "token_from_redis",
                    account=account.name,
                    user=account.user,
                    reason=f"the {account.dialect.value} credentials are for {user}",
                )
            continue
        key = (account.dialect, lockout_user(settings, account))
        manager = by_user.get(key)
        if manager is None:
            manager = by_user[key] = _manager(settings, account, store)
        managers[account.name] = manager
    return AccountTokens(store, managers)
