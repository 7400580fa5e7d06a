"""Build the right adapter for a configured account, by its dialect.

One adapter serves one Tradovate user: its accounts share the token (reference §2.9, §9.3)
and the request budget. ``build_broker`` builds it for one account; the adapter also knows
the user's other configured accounts of the same dialect, so one instance can serve them.

An account's user is ``Settings.user_of``: its ``user`` setting, else the only configured
user of its dialect (``[[users]]``, ``[tokens.native]``, ``[tokens.bridge]``). A configured
user with a password logs in itself (one manager per user: its own lock, login cap and
lockout); any other user's token is read from Redis. ``build_account_tokens`` gives every
configured account its token source for a running process.

Request budgets (reference §7, ``budget.py``) are per Tradovate user: one ``RequestBudget``
per process, shared by the managers' logins and every adapter, each request keyed by its
user's name, so two users never share windows and one user's accounts, logins and dialects
always do. Where the process has a Redis and ``tradovate.budget = "redis"`` (the default),
it is a ``RedisBudget``: the windows are shared with every other process on that Redis.
"""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from tradebridge.brokers.auth import AccountTokens, BridgeTokenManager, SelfManaged, TokenManager
from tradebridge.brokers.base import Broker, BrokerCapabilities
from tradebridge.brokers.http import BrokerHttp, RequestBudget, http_for
from tradebridge.brokers.tvbridge.broker import TvBridgeBroker, TvBridgeOptions
from tradebridge.config import (
    AccountConfig,
    BridgeCredentials,
    NativeCredentials,
    Settings,
    UserConfig,
)
from tradebridge.domain.enums import Dialect
from tradebridge.domain.ids import AccountName
from tradebridge.obs.logging import get_logger
from tradebridge.store.tokens import TokenProvider, TokenStore

_log = get_logger("tradebridge.brokers.factory")


def token_user(settings: Settings, account: AccountConfig) -> str | None:
    """Return the Tradovate user whose token serves ``account`` (None: unknown)."""
    return settings.user_of(account)


def lockout_user(settings: Settings, account: AccountConfig) -> str:
    """Return the name ``account``'s lockouts, budget and adapter are kept under."""
    return token_user(settings, account) or f"account:{account.name}"


def login_of(settings: Settings, account: AccountConfig) -> UserConfig | None:
    """Return the configured user with credentials who logs in for ``account``, or None."""
    user = settings.login_of(account)
    return user if user is not None and user.credentials() is not None else None


def is_self_managed(settings: Settings, account: AccountConfig) -> bool:
    """Return whether tradebridge logs in itself for ``account`` (its user's credentials)."""
    return login_of(settings, account) is not None


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


def request_budget(settings: Settings, redis: aioredis.Redis | None = None) -> RequestBudget:
    """Return a process's request budget: one set of windows per Tradovate user (§7).

    Shared through ``redis`` unless ``tradovate.budget = "local"`` or there is none.
    """
    if redis is not None and settings.tradovate.budget == "redis":
        from tradebridge.brokers.redis_budget import RedisBudget

        return RedisBudget(settings.tradovate, redis)
    return RequestBudget(settings.tradovate)


def bridge_http(settings: Settings, budget: RequestBudget | None = None) -> BrokerHttp:
    """Return the HTTP client of the TradingView bridge, with timeouts and request budget."""
    cfg = settings.tradovate
    return BrokerHttp(
        cfg.bridge_url,
        dialect=Dialect.TVBRIDGE.value,
        timeout_s=cfg.request_timeout_s,
        connect_timeout_s=cfg.connect_timeout_s,
        budget=budget or request_budget(settings),
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
    budget: RequestBudget | None = None,
) -> TvBridgeBroker:
    """Build the bridge adapter for ``account`` (and its user's other bridge accounts)."""
    cfg = settings.tradovate
    opts = options or bridge_options(settings)
    return TvBridgeBroker(
        bridge_http(settings, budget),
        tokens,
        token_account=AccountName(account.name),
        accounts={AccountName(a.name): a.bridge_id for a in same_user(settings, account)},
        user=lockout_user(settings, account),
        options=opts,
        retry=cfg.retry,
    )


def build_native(
    settings: Settings,
    account: AccountConfig,
    tokens: TokenProvider,
    *,
    budget: RequestBudget | None = None,
) -> Broker:
    """Build the native adapter for ``account`` (and its user's other native accounts)."""
    from tradebridge.brokers.tradovate import TradovateBroker

    return TradovateBroker(
        settings.tradovate,
        same_user(settings, account),
        tokens,
        budget=budget,
        user=token_user(settings, account),
    )


def dialect_capabilities(dialect: Dialect) -> BrokerCapabilities:
    """Return what the adapter of ``dialect`` can do, without building one."""
    if dialect is Dialect.TVBRIDGE:
        return TvBridgeBroker.capabilities
    from tradebridge.brokers.tradovate import TradovateBroker

    return TradovateBroker.capabilities


def build_broker(
    settings: Settings,
    account_name: str,
    tokens: TokenProvider,
    *,
    budget: RequestBudget | None = None,
) -> Broker:
    """Build the adapter of a configured account by its dialect; ``ConfigError`` if unknown.

    ``budget`` is the process's request budget (default: the one ``tokens`` logs in with,
    so that the user's logins and requests share it).
    """
    account = settings.account(account_name)
    budget = budget or budget_of(tokens)
    if account.dialect is Dialect.TVBRIDGE:
        return build_tvbridge(settings, account, tokens, budget=budget)
    return build_native(settings, account, tokens, budget=budget)


def budget_of(tokens: TokenProvider) -> RequestBudget | None:
    """Return the request budget a token source logs in with (None: it does not log in)."""
    if isinstance(tokens, AccountTokens):
        return tokens.budget
    if isinstance(tokens, TokenManager | BridgeTokenManager):
        return tokens.http.budget
    return None


def lockout_users(settings: Settings) -> Callable[[str], str | None]:
    """Return the account name -> user mapping a ``TokenStore`` checks lockouts with."""
    users = {a.name: lockout_user(settings, a) for a in settings.accounts}
    return lambda name: users.get(name, f"account:{name}")


def build_tokens(
    settings: Settings,
    account_name: str,
    store: TokenStore,
    *,
    budget: RequestBudget | None = None,
) -> TokenStore | TokenManager | BridgeTokenManager:
    """Return the account's token source: its user's login if configured, else Redis.

    An account whose user has credentials (``[[users]]`` with a password, ``[tokens.native]``,
    ``[tokens.bridge]``) gets that user's manager; the token is written under the keys of
    every configured account of the same user. Other accounts read Redis. Either source
    refuses while the user is locked out. Close it with ``aclose()`` (a manager owns an
    HTTP client).
    """
    account = settings.account(account_name)
    store = store.with_users(lockout_users(settings))
    user = login_of(settings, account)
    if user is None:
        return store
    names = [a.name for a in same_user(settings, account)]
    budget = budget or request_budget(settings, store.redis)
    return user_manager(settings, user, names, store, budget)


def user_manager(
    settings: Settings,
    user: UserConfig,
    account_names: list[str],
    store: TokenStore,
    budget: RequestBudget,
) -> SelfManaged:
    """Return the token manager of a user with credentials, writing under these accounts."""
    cfg = settings.tradovate
    credentials = user.credentials()
    if isinstance(credentials, BridgeCredentials):
        return BridgeTokenManager(
            store, bridge_http(settings, budget), credentials, account_names=account_names,
            environment=cfg.environment.value, retry=cfg.retry,
        )  # fmt: skip
    if isinstance(credentials, NativeCredentials):
        return TokenManager(
            store, http_for(cfg, "native", budget=budget), credentials,
            device_id=settings.device_id(), account_names=account_names,
            environment=cfg.environment.value, retry=cfg.retry,
        )  # fmt: skip
    raise AssertionError(f"{user.name} has no password")  # callers check credentials()


def build_account_tokens(
    settings: Settings, redis: aioredis.Redis, *, budget: RequestBudget | None = None
) -> AccountTokens:
    """Return every configured account's token source: one manager per user with credentials.

    Accounts of a user with credentials share one manager (one login, one renewal, written
    under all their keys); the others read Redis. Every source checks the user's lockout.
    Managers and the adapters built from the result share one request budget, shared in
    turn with the other processes on ``redis`` (``request_budget``).
    """
    budget = budget or request_budget(settings, redis)
    store = TokenStore(
        redis, settings.tokens, key_for=settings.token_key, user_for=lockout_users(settings)
    )
    managers: dict[str, SelfManaged] = {}
    by_user: dict[tuple[Dialect, str], SelfManaged] = {}
    for account in settings.accounts:
        configured = settings.login_of(account)
        if configured is None or configured.credentials() is None:
            if configured is not None:
                _log.warning(
                    "token_from_redis",
                    account=account.name,
                    user=configured.name,
                    reason=f"no password: {configured.password_variable} is not set",
                )
            continue
        key = (account.dialect, configured.name)
        manager = by_user.get(key)
        if manager is None:
            names = [a.name for a in same_user(settings, account)]
            manager = by_user[key] = user_manager(settings, configured, names, store, budget)
        managers[account.name] = manager
    return AccountTokens(store, managers, budget=budget)
