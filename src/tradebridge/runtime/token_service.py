"""``tradebridge tokens serve``: keep every configured user's token fresh in Redis.

The role an hourly cron plays where other programs share the Redis: for every Tradovate user
with credentials (``[[users]]`` with a password, ``[tokens.native]``, ``[tokens.bridge]``) it
logs in once, renews before expiry (native ``auth/renewaccesstoken``; the bridge, which
cannot renew, logs in again when due), writes the token under every one of the user's
account keys (``token:<account>``), writes back keys Redis lost, and every
``tokens.verify_interval_s`` asks Tradovate whether the token still works, logging in again
if it was refused. It is the workers' own ``keep`` (brokers/auth.py): the same lock
``lock:token:<user>``, login cap and lockout, so it runs beside workers without a second
login. ``run_once`` is the cron form: renew what needs it, write every key, return.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tradebridge.brokers.auth import AccountTokens
from tradebridge.brokers.factory import build_account_tokens
from tradebridge.config import Settings
from tradebridge.errors import BridgeError, BrokerUnavailable, ConfigError
from tradebridge.obs.logging import get_logger, mask_url
from tradebridge.runtime.serve import stop_on_signals
from tradebridge.store.tokens import connect_redis

_log = get_logger("tradebridge.runtime.token_service")


class NoUserToServe(ConfigError):
    """No configured Tradovate user has credentials: the service would have nothing to do."""


@dataclass(frozen=True, slots=True)
class UserTokens:
    """What ``run_once`` did for one user: its keys, the token's expiry, or the error."""

    user: str
    dialect: str
    keys: tuple[str, ...]
    action: str  # login | renewed | kept | failed
    expires_at: datetime | None = None
    error: str | None = None


def served_users(settings: Settings) -> tuple[list[str], list[str]]:
    """Return the users the service keeps tokens for, and why each other user is skipped."""
    served: list[str] = []
    skipped: list[str] = []
    for user in settings.configured_users():
        label = f"{user.name} ({user.dialect.value})"
        accounts = [a for a in settings.accounts if settings.login_of(a) == user]
        if user.credentials() is None:
            skipped.append(f"{label}: no password, {user.password_variable} is not set")
        elif not accounts:
            skipped.append(f"{label}: no [[accounts]] name this user, no key to write")
        else:
            served.append(label)
    return served, skipped


def require_users(settings: Settings) -> list[str]:
    """Return the users to serve; ``NoUserToServe`` (with what to do) when there are none."""
    served, skipped = served_users(settings)
    if not served:
        why = "; ".join(skipped) if skipped else "no [[users]] are configured"
        raise NoUserToServe(
            f"no Tradovate user has credentials to keep tokens for ({why}); add [[users]] "
            "with their passwords in tradebridge.env (docs/tradovate.md), or run `tradebridge "
            "init`"
        )
    for reason in skipped:
        _log.warning("token_service_skips_user", reason=reason)
    return served


@contextlib.asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[AccountTokens]:
    redis = connect_redis(settings.redis)
    try:
        await _ping(redis, settings)
        tokens = build_account_tokens(settings, redis)
        try:
            yield tokens
        finally:
            await tokens.aclose()
    finally:
        await redis.aclose()


async def _ping(redis: aioredis.Redis, settings: Settings) -> None:
    try:
        await redis.ping()
    except (RedisError, OSError) as e:
        url = settings.redis.url
        where = mask_url(url.get_secret_value()) if url else "redis://127.0.0.1:6379/0"
        raise BrokerUnavailable(
            f"Redis at {where} does not answer ({type(e).__name__}); start it, or set "
            "REDIS_URL (or --redis-url) to the Redis the workers read tokens from"
        ) from e


async def run_token_service(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Keep every served user's token fresh until ``stop`` is set (or SIGTERM/SIGINT)."""
    users = require_users(settings)
    own_stop = stop is None
    stop = stop or asyncio.Event()
    with stop_on_signals(stop) if own_stop else contextlib.nullcontext():
        async with _opened(settings) as tokens:
            keys = sorted(k for m in tokens.distinct_managers() for k in m.keys)
            _log.info("token_service_started", users=users, keys=keys,
                      verify_interval_s=settings.tokens.verify_interval_s)  # fmt: skip
            await tokens.keep(stop, ahead=True, verify_every_s=settings.tokens.verify_interval_s)
            _log.info("token_service_stopped")


async def run_once(settings: Settings) -> list[UserTokens]:
    """Renew what needs it, write every served user's token under all its keys, return."""
    require_users(settings)
    done: list[UserTokens] = []
    async with _opened(settings) as tokens:
        for manager in tokens.distinct_managers():
            dialect = "tvbridge" if manager.kind == "tv" else "native"
            logins, renewals = manager.logins, manager.renewals
            account = manager.account_names[0]
            try:
                token = await manager.token(account)
                if settings.tokens.verify_interval_s > 0:
                    token = await manager.verified(account, token)
                await manager.store.write(manager.keys, token)
            except BridgeError as e:
                done.append(UserTokens(manager.user, dialect, tuple(manager.keys), "failed",
                                       error=str(e)))  # fmt: skip
                continue
            action = "kept"
            if manager.logins > logins:
                action = "login"
            elif manager.renewals > renewals:
                action = "renewed"
            _log.info("token_written", user=manager.user, action=action, keys=manager.keys,
                      expires_at=token.expires_at.isoformat())  # fmt: skip
            done.append(UserTokens(manager.user, dialect, tuple(manager.keys), action,
                                   token.expires_at))  # fmt: skip
    return done
