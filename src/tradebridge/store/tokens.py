"""Tradovate tokens in Redis: read, cache, remember refusals, and share lockouts.

``TokenStore`` reads the key of an account (template ``token:{account_name}``). The value is
the JSON of reference §2.9 (``{"kind","env","accessToken","mdAccessToken","expirationTime",
"userId","obtainedAt"}``) or, as older token services write it, the bare token. The expiry
is ``expirationTime``, else the JWT's ``exp``, else the key's TTL. A token is cached in the
process until ``expiry_margin_s`` before it expires; after a 401 the caller asks for
``after_refused`` and the key is re-read exactly once. A token the broker refused is
remembered (a digest, never the token) until the key holds another: it is not sent again,
and ``health`` reports the account ``refused`` (a 401 never turns back into a 200).

``Lockouts`` keeps every lockout (423, 429, captcha penalty: reference §6.2, §6.3, §7) of a
Tradovate user in Redis under ``lockout:token:<user>``, its end as the key's TTL, so that
every process, and every process started later, refuses to call for that user until it
ends. A ``TokenStore`` that knows its accounts' users (``user_for``) checks it before
handing out any token, which is before any request of either adapter.

Logins that tradebridge makes itself (``TokenManager``, ``BridgeTokenManager``) and
``AccountTokens`` live in ``brokers/auth.py``: they call Tradovate; this module only reads
and writes Redis.

Tokens never appear in logs, errors or reprs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    RedisError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from tradebridge._aio import single_flight
from tradebridge.config import (
    RedisConfig,
    TokenConfig,
)
from tradebridge.domain.clock import Clock, utcnow
from tradebridge.errors import (
    AuthError,
    BridgeError,
    ConnectionLost,
    Lockout,
    RedisUnavailable,
)
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger, mask_url, redact_text

_log = get_logger("tradebridge.store.tokens")


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url(config: RedisConfig) -> str:
    """Return the configured Redis URL, or the local default."""
    return config.url.get_secret_value() if config.url else DEFAULT_REDIS_URL


def how_to_fill(key: str) -> str:
    """Return the ways to get a fresh token under ``key``, for an error that lacks one."""
    return (
        "run `tradebridge tokens serve` (it logs in and renews for every configured user), "
        "or configure the account's Tradovate user with its password ([[users]] in "
        f"tradebridge.toml, see docs/tradovate.md), or have your own token writer fill {key}"
    )


def connect_redis(config: RedisConfig) -> aioredis.Redis:
    """Return an async Redis client for the configured URL (default: local Redis)."""
    return aioredis.Redis.from_url(
        redis_url(config),
        socket_timeout=config.socket_timeout_s,
        socket_connect_timeout=config.socket_timeout_s,
    )


async def check_redis(redis: aioredis.Redis, url: str) -> None:
    """Return once Redis answers PING; else ``RedisUnavailable`` (password masked) says why."""
    try:
        await redis.ping()
    except (RedisError, OSError) as e:
        reason = redis_failure(e)
        where = mask_url(url)
        raise RedisUnavailable(
            f"cannot connect to Redis at {where}: {reason}", where=where, reason=reason
        ) from None


async def open_connections(redis: aioredis.Redis, count: int) -> int:
    """Open ``count`` of the client's pooled connections now, leave them idle in its pool and
    return how many are open; a failure is logged, not raised (they open on demand then).

    redis-py opens a connection when a command finds none idle: a TCP connect and two or
    three handshake round trips. The first fan-out to 20 accounts after a start opened 18 at
    once, ~15 ms each on a busy 2-core machine, on the way of every order (issue 12).
    """
    pool = redis.connection_pool
    taken = await asyncio.gather(
        *(pool.get_connection() for _ in range(count)),  # type: ignore[no-untyped-call]
        return_exceptions=True,
    )
    opened = [c for c in taken if not isinstance(c, BaseException)]
    for connection in opened:
        await pool.release(connection)
    failed = [e for e in taken if isinstance(e, BaseException)]
    if failed:
        _log.warning("redis_connections_not_opened", wanted=count, opened=len(opened),
                     reason=redis_failure(failed[0]))  # fmt: skip
    return len(opened)


def redis_failure(error: BaseException) -> str:
    """Say in a few words why Redis failed (redis-py's messages name the host, no secret)."""
    if isinstance(error, AuthenticationError | AuthenticationWrongNumberOfArgsError):
        return "authentication failed (check the password in the URL)"
    if isinstance(error, RedisTimeoutError | TimeoutError):
        return "timed out"
    text = str(error)
    if "refused" in text.lower() or "Error 111" in text:
        return "connection refused"
    if "NOAUTH" in text or "WRONGPASS" in text or "invalid password" in text.lower():
        return "authentication failed (check the password in the URL)"
    first = text.splitlines()[0] if text else type(error).__name__
    return redact_text(first)


@dataclass(frozen=True, slots=True)
class StoredToken:
    """An access token with its expiry; its repr never shows the token."""

    access_token: str = field(repr=False)
    expires_at: datetime
    key: str = ""
    kind: str = "native"  # native | tv
    env: str | None = None
    user_id: int | None = None
    md_access_token: str | None = field(default=None, repr=False)
    obtained_at: datetime | None = None

    def __repr__(self) -> str:
        return (
            f"StoredToken(key={self.key!r}, kind={self.kind!r}, env={self.env!r}, "
            f"user_id={self.user_id!r}, expires_at={self.expires_at.isoformat()}, "
            "access_token=***)"
        )

    __str__ = __repr__

    def remaining(self, now: datetime) -> timedelta:
        """Return the time left until expiry (negative when expired)."""
        return self.expires_at - now

    def to_json(self) -> str:
        """Return the Redis value of reference §2.9."""
        return json.dumps(
            {
                "kind": self.kind,
                "env": self.env,
                "accessToken": self.access_token,
                "mdAccessToken": self.md_access_token,
                "expirationTime": iso_time(self.expires_at),
                "userId": self.user_id,
                "obtainedAt": iso_time(self.obtained_at) if self.obtained_at else None,
            }
        )


def _digest(token: StoredToken) -> str:
    """Return a digest that tells tokens apart without keeping one."""
    return hashlib.sha256(token.access_token.encode()).hexdigest()


def iso_time(moment: datetime) -> str:
    """Return ``moment`` as Tradovate writes times (UTC, milliseconds, ``Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time (``Z`` allowed) into an aware UTC datetime."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def jwt_expiry(token: str) -> datetime | None:
    """Return the ``exp`` claim of a JWT-shaped token, or None if it has none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (ValueError, KeyError, TypeError):
        return None


def parse_token_value(raw: str, key: str, ttl_s: float | None = None) -> StoredToken:
    """Parse a Redis token value (§2.9 JSON or a bare token); ``AuthError`` if malformed."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise AuthError(f"the token under {key} is not valid JSON") from e
        token = data.get("accessToken") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(f"the token under {key} has no accessToken")
        expires: datetime | None = None
        if data.get("expirationTime"):
            try:
                expires = parse_time(str(data["expirationTime"]))
            except ValueError as e:
                raise AuthError(f"the token under {key} has an unreadable expirationTime") from e
        expires = expires or jwt_expiry(token) or _from_ttl(ttl_s)
        if expires is None:
            raise AuthError(f"the token under {key} has no expirationTime, exp claim or TTL")
        obtained = data.get("obtainedAt")
        user_id = data.get("userId")
        return StoredToken(
            access_token=token,
            expires_at=expires,
            key=key,
            kind=str(data.get("kind") or "native"),
            env=data.get("env"),
            user_id=int(user_id) if user_id is not None else None,
            md_access_token=data.get("mdAccessToken"),
            obtained_at=parse_time(str(obtained)) if obtained else None,
        )
    token = text.strip('"')
    if not token or any(c.isspace() for c in token):
        raise AuthError(f"the value under {key} is neither token JSON nor a bare token")
    expires = jwt_expiry(token) or _from_ttl(ttl_s)
    if expires is None:
        raise AuthError(f"the bare token under {key} has no exp claim and the key has no TTL")
    return StoredToken(access_token=token, expires_at=expires, key=key)


def _from_ttl(ttl_s: float | None) -> datetime | None:
    return utcnow() + timedelta(seconds=ttl_s) if ttl_s and ttl_s > 0 else None


@dataclass(frozen=True, slots=True)
class LockoutState:
    """A Tradovate user's lockout: why, and until when no call may be made for it."""

    user: str
    until: datetime
    reason: str

    def error(self) -> Lockout:
        """Return the ``Lockout`` error a refused call raises."""
        return Lockout(
            f"{self.user} is locked out until {self.until.isoformat(timespec='seconds')} "
            f"({self.reason}); no calls to Tradovate for this user before then",
            until=self.until,
        )


class Lockouts:
    """Per-user lockouts, shared by every process through Redis keys that expire with them.

    The key is ``lockout:token:<user>``, its value the reason, its TTL the time left. A key
    without a TTL is not a lockout (an end is what makes one). A lockout recorded while
    Redis cannot be written still holds in this process until it ends.
    """

    def __init__(self, redis: aioredis.Redis, *, clock: Clock = utcnow) -> None:
        self.redis = redis
        self.clock = clock
        self._unshared: dict[str, LockoutState] = {}  # recorded here, not (yet) in Redis
        self._seen: dict[str, LockoutState] = {}  # last read from Redis, for Redis outages
        self._writes: set[asyncio.Task[None]] = set()
        # The read of a user's key in flight: concurrent checks (a fan-out's orders) share it.
        self._reading: dict[str, asyncio.Future[LockoutState | None]] = {}

    def __repr__(self) -> str:
        return f"Lockouts(unshared={sorted(self._unshared)!r})"

    @staticmethod
    def key(user: str) -> str:
        """Return the Redis key of ``user``'s lockout."""
        return f"lockout:token:{user}"

    async def current(self, user: str) -> LockoutState | None:
        """Return ``user``'s lockout if one holds; ``ConnectionLost`` if Redis cannot be read.

        A check while another one's read of the key is in flight shares that read (a
        fan-out's orders check at once): a lockout written meanwhile is seen by the next
        check, as one written just after the read would be.
        """
        local = self._unshared.get(user)
        if local is not None and local.until > self.clock():
            return local
        return await single_flight(self._reading, user, lambda: self._read(user))

    async def _read(self, user: str) -> LockoutState | None:
        now = self.clock()
        key = self.key(user)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                raw, ttl_ms = await pipe.execute()
        except RedisError as e:
            raise ConnectionLost(f"cannot read {key} from Redis ({type(e).__name__})") from e
        if raw is None or ttl_ms is None or ttl_ms <= 0:
            self._seen.pop(user, None)
            return None
        reason = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        state = LockoutState(user, now + timedelta(milliseconds=ttl_ms), reason or "lockout")
        self._seen[user] = state
        return state

    async def check(self, user: str) -> None:
        """Raise ``Lockout`` if ``user`` is locked out, here or in any process."""
        try:
            state = await self.current(user)
        except ConnectionLost:
            # Redis is down: go by what this process knows rather than stop every call.
            state = self._seen.get(user)
            if state is None or state.until <= self.clock():
                _log.warning("token_lockout_unreadable", user=user)
                return
        if state is not None:
            raise state.error()

    async def record(self, user: str, reason: str, seconds: float) -> LockoutState:
        """Lock ``user`` out for ``seconds`` in every process; return the lockout."""
        state = self._remember(user, reason, seconds)
        await self._share(state)
        return state

    def note(self, user: str, reason: str, seconds: float) -> LockoutState:
        """Record a lockout from synchronous code: known here at once, in Redis shortly."""
        state = self._remember(user, reason, seconds)
        task = asyncio.get_running_loop().create_task(self._share(state))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return state

    async def flush(self) -> None:
        """Wait until the lockouts noted so far are written to Redis (or failed to be)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _remember(self, user: str, reason: str, seconds: float) -> LockoutState:
        metrics.LOCKOUTS.labels(user=user).inc()
        state = LockoutState(user, self.clock() + timedelta(seconds=seconds), reason)
        known = self._unshared.get(user)
        if known is None or known.until < state.until:
            self._unshared[user] = state
        return state

    async def _share(self, state: LockoutState) -> None:
        ttl_ms = max(int((state.until - self.clock()).total_seconds() * 1000), 1)
        try:
            await self.redis.set(self.key(state.user), redact_text(state.reason), px=ttl_ms)
        except RedisError:
            _log.warning("token_lockout_not_shared", user=state.user)  # still holds here
            return
        if self._unshared.get(state.user) is state:
            del self._unshared[state.user]


class TokenProvider(Protocol):
    """Where adapters get tokens: a ``TokenStore`` or a ``TokenManager``."""

    async def token(self, account_name: str) -> StoredToken:
        """Return a valid token for the account."""
        ...

    async def after_refused(self, account_name: str, refused: StoredToken) -> StoredToken:
        """Return a different token after the broker refused ``refused`` (401); else raise."""
        ...


async def renew_after_sending(
    tokens: TokenProvider, account_name: str, refused: StoredToken
) -> str:
    """Ask for a token other than ``refused`` after an order sent with it was answered 401
    (the lookup that must come before any resend needs one); return what came of it, in
    words, for the error that follows. A failure is told, not raised: the order may exist
    all the same, and the lookup waits for a usable token."""
    try:
        await tokens.after_refused(account_name, refused)
    except BridgeError as e:
        return f"renewing the token failed too ({e})"
    return "the token was renewed for the lookup"


class TokenStore:
    """Reads tokens from Redis and caches them in the process until shortly before expiry.

    With ``user_for`` (account name -> Tradovate user), no token is handed out while the
    account's user is locked out (``Lockouts``): every request starts with a token, so this
    is the one place that keeps every adapter from calling for a locked-out user.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        config: TokenConfig,
        *,
        key_for: Callable[[str], str] | None = None,
        user_for: Callable[[str], str | None] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.redis = redis
        self.config = config
        self.key_for = key_for or config.key_for
        self.user_for = user_for
        self.clock = clock
        self.lockouts = Lockouts(redis, clock=clock)
        self._cache: dict[str, StoredToken] = {}
        # key -> digest of the token the broker last refused under it (until the key changes)
        self._refused: dict[str, str] = {}

    def with_users(self, user_for: Callable[[str], str | None]) -> TokenStore:
        """Return a store on the same Redis and keys that checks lockouts of these users."""
        return TokenStore(
            self.redis, self.config, key_for=self.key_for, user_for=user_for, clock=self.clock
        )

    def __repr__(self) -> str:
        return f"TokenStore(template={self.config.key_template!r}, cached={len(self._cache)})"

    async def aclose(self) -> None:
        """Do nothing: the Redis client belongs to the caller (managers close their HTTP)."""

    def invalidate(self, account_name: str) -> None:
        """Forget the cached token of an account."""
        self._cache.pop(self.key_for(account_name), None)

    async def check_lockout(self, account_name: str) -> None:
        """Raise ``Lockout`` if the account's user is locked out (nothing if users unknown)."""
        user = self.user_for(account_name) if self.user_for is not None else None
        if user is not None:
            await self.lockouts.check(user)

    async def token(self, account_name: str) -> StoredToken:
        """Return the account's token from the cache or Redis; ``AuthError`` if unusable."""
        await self.check_lockout(account_name)
        key = self.key_for(account_name)
        cached = self._cache.get(key)
        margin = timedelta(seconds=self.config.expiry_margin_s)
        if cached is not None and cached.remaining(self.clock()) > margin:
            return cached
        return await self._read_valid(key, account_name)

    async def after_refused(self, account_name: str, refused: StoredToken) -> StoredToken:
        """Re-read the key once after a 401; ``AuthError`` if Redis holds nothing newer.

        The refused token leaves the cache under every key that holds it: one token serves
        all of a user's accounts (§2.9), and the next order of another account must not go
        out with a token just refused (its 401 would make that order's outcome unknown).
        """
        await self.check_lockout(account_name)
        key = self.key_for(account_name)
        self._cache.pop(key, None)
        for other, cached in list(self._cache.items()):
            if cached.access_token == refused.access_token:
                del self._cache[other]
        fresh = await self._read_valid(key, account_name)
        if fresh.access_token == refused.access_token:
            self._cache.pop(key, None)
            self._refused[key] = _digest(refused)
            raise AuthError(
                f"Tradovate refused the token under {key} and Redis holds no newer one; "
                + how_to_fill(key)
            )
        return fresh

    async def read(self, key: str) -> StoredToken | None:
        """Return the token stored under ``key`` without caching, or None if the key is absent."""
        try:
            raw = await self.redis.get(key)
            ttl_ms = await self.redis.pttl(key) if raw is not None else -2
        except RedisError as e:
            raise ConnectionLost(f"cannot read {key} from Redis ({type(e).__name__})") from e
        if raw is None:
            return None
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return parse_token_value(text, key, ttl_ms / 1000 if ttl_ms > 0 else None)

    async def write(
        self, keys: Sequence[str], token: StoredToken, *, only_missing: bool = False
    ) -> list[str]:
        """Store ``token`` under every key, expiring slightly before the token does (§2.9).

        ``only_missing`` writes only keys that do not exist (``SET NX``: a newer token another
        process wrote is never replaced). Return the keys written.
        """
        ttl = token.remaining(self.clock()) - timedelta(seconds=self.config.expiry_margin_s / 2)
        ttl_ms = max(int(ttl.total_seconds() * 1000), 1000)
        value = token.to_json()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.set(key, value, px=ttl_ms, nx=only_missing)
                done = await pipe.execute()
        except RedisError as e:
            raise ConnectionLost(f"cannot write tokens to Redis ({type(e).__name__})") from e
        written = [key for key, ok in zip(keys, done, strict=True) if ok]
        for key in written:
            self._cache[key] = StoredToken(
                token.access_token, token.expires_at, key, token.kind, token.env,
                token.user_id, token.md_access_token, token.obtained_at,
            )  # fmt: skip
        return written

    async def missing(self, keys: Sequence[str]) -> list[str]:
        """Return the keys Redis does not hold (one round trip)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.exists(key)
                found = await pipe.execute()
        except RedisError as e:
            raise ConnectionLost(f"cannot read token keys from Redis ({type(e).__name__})") from e
        return [key for key, there in zip(keys, found, strict=True) if not there]

    def is_refused(self, key: str, stored: StoredToken) -> bool:
        """Return whether the broker refused this very token under ``key`` before."""
        return self._refused.get(key) == _digest(stored)

    async def _read_valid(self, key: str, account_name: str) -> StoredToken:
        stored = await self.read(key)
        if stored is None:
            self._cache.pop(key, None)
            raise AuthError(
                f"no token in Redis under {key} (account {account_name}); " + how_to_fill(key)
            )
        if self.is_refused(key, stored):
            # Sending it again would only earn another 401 (and count towards a lockout).
            raise AuthError(
                f"Tradovate refused the token under {key} and Redis holds no newer one; "
                + how_to_fill(key)
            )
        self._refused.pop(key, None)
        if self.user_for is not None:
            metrics.observe_token(self.user_for(account_name), stored.expires_at)
        now = self.clock()
        if stored.remaining(now) <= timedelta(0):
            self._cache.pop(key, None)
            raise AuthError(
                f"the token under {key} expired at {stored.expires_at.isoformat()} and nothing "
                "renewed it; " + how_to_fill(key)
            )
        if stored.remaining(now) > timedelta(seconds=self.config.expiry_margin_s):
            self._cache[key] = stored
        return stored


# How often a keeper looks at its user's token at least / at most.
