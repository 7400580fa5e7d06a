"""Tradovate logins that tradebridge makes itself: obtain, renew and share tokens.

``TokenManager`` adds self-managed native tokens: ``auth/accesstokenrequest`` classified on
the body (``errorText`` is final, a p-ticket without captcha is waited out and resent, a
captcha, 423 or 429 is a one-hour ``Lockout`` with an alert), ``auth/renewaccesstoken``
before expiry under the Redis lock ``lock:token:<user>`` so that one process renews for all,
and at most ``max_logins_per_hour`` logins per user, counted in Redis.

``BridgeTokenManager`` does the same for the TradingView bridge (``POST /authorize``,
``kind: "tv"``); the bridge cannot renew, so it logs in again before expiry. Both share the
lock, the login cap and the lockout of their user (``_SelfManagedTokens``).

``AccountTokens`` is what a running ``serve`` uses: each account's token comes from its
user's manager when credentials are configured, else from Redis; ``keep`` renews ahead of
expiry, ``health`` reports missing, expired and locked-out tokens without calling Tradovate.

Tokens never appear in logs, errors or reprs.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, Required, TypedDict, TypeVar, Unpack

from redis.exceptions import RedisError

from tradebridge.brokers.http import (
    BrokerHttp,
    HttpAnswer,
    RequestBudget,
    RequestKind,
    raise_for_status,
)
from tradebridge.brokers.retry import RetryPolicy
from tradebridge.config import (
    BridgeCredentials,
    NativeCredentials,
    RetryConfig,
)
from tradebridge.errors import (
    AuthError,
    BrokerError,
    ConnectionLost,
    Lockout,
    LoginFailed,
    RateLimited,
)
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger, redact_text
from tradebridge.store.tokens import (
    Lockouts,
    StoredToken,
    TokenProvider,
    TokenStore,
    iso_time,
    jwt_expiry,
    parse_time,
)

_log = get_logger("tradebridge.brokers.auth")

AlertHook = Callable[[str], None]
Sleep = Callable[[float], Awaitable[None]]


_KEEP_MIN_S = 1.0
_KEEP_MAX_S = 60.0

_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


def _default_alert(message: str) -> None:
    _log.error("token_alert", message=message)


_Credentials = TypeVar("_Credentials", NativeCredentials, BridgeCredentials)


class ManagerOptions(TypedDict, total=False):
    """The keyword options of a self-managed token provider besides its credentials."""

    account_names: Required[Sequence[str]]
    environment: str
    alert: AlertHook
    retry: RetryConfig | None
    sleep: Sleep


class _SelfManagedTokens(abc.ABC, Generic[_Credentials]):
    """What native and bridge self-managed logins share, per Tradovate user.

    One single-flight lock (``lock:token:<user>``), one login cap (``logins:token:<user>``)
    and one lockout (``lockout:token:<user>``, ``Lockouts``) per user, whichever dialect logs
    in: a lockout or a spent login budget is the user's, not the dialect's. Subclasses say
    how to obtain a token (``_obtain``) and how to extend one (``_refresh``).
    """

    kind = "native"
    # Whether a token can be extended without a new login; if not, ``keep`` does not log in
    # ahead of time (each login counts against the hourly cap): use does, when due.
    renews = False
    # The cheap authenticated read that tells whether a token still works (``accepts``).
    _probe_path = "/account/list"
    _probe_params: dict[str, str] | None = None

    def __init__(
        self,
        store: TokenStore,
        http: BrokerHttp,
        credentials: _Credentials,
        *,
        account_names: Sequence[str],
        environment: str = "demo",
        alert: AlertHook = _default_alert,
        retry: RetryConfig | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.http = http
        self.config = store.config
        self.credentials: _Credentials = credentials
        self.user = (
            credentials.name if isinstance(credentials, NativeCredentials) else credentials.login
        )
        self.account_names = list(account_names)
        self.environment = environment
        self.alert = alert
        self.retry = RetryPolicy(retry or RetryConfig())
        self.sleep = sleep
        self.lock_key = f"lock:token:{self.user}"
        self.lockout_key = Lockouts.key(self.user)
        self.logins_key = f"logins:token:{self.user}"
        self.logins = 0  # successful logins by this process
        self.renewals = 0  # successful renewals by this process
        # Why the last login failed (None since a success): a missing token that no login
        # will obtain is a health problem; one that the next use will obtain is not.
        self.failure: str | None = None
        # The last token this process stored or used: written again under any key Redis
        # lost (``reseed``), and what makes a missing key a health problem meanwhile.
        self.last: StoredToken | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(user={self.user!r}, accounts={self.account_names!r})"

    @property
    def keys(self) -> list[str]:
        """Return the Redis keys this user's token is written under."""
        return [self.store.key_for(name) for name in self.account_names]

    async def aclose(self) -> None:
        """Close the HTTP client used for logins (Redis belongs to the caller)."""
        await self.http.aclose()

    async def token(self, account_name: str) -> StoredToken:
        """Return a valid token, logging in or renewing (single-flight) when needed."""
        try:
            current: StoredToken | None = await self.store.token(account_name)
        except AuthError:
            current = None
        if current is not None and current.kind != self.kind:
            current = None  # the other dialect's token under our key: replace it with ours
        if current is not None and not self.needs_renewal(current):
            self.last = current
            return current
        self.last = await self._single_flight(account_name, current)
        return self.last

    def holds_valid_token(self) -> bool:
        """Return whether this process holds a token of this user that has not expired."""
        return self.last is not None and self.last.remaining(self.store.clock()) > timedelta(0)

    async def reseed(self) -> list[str]:
        """Write the last token under the user's keys Redis lost (restarted empty, flushed).

        Only missing keys are written (``SET NX``) and only with a token still valid: a
        newer token another process wrote stays. Return the keys written.
        """
        token = self.last
        if token is None or not self.holds_valid_token():
            return []
        missing = await self.store.missing(self.keys)
        if not missing:
            return []
        written = await self.store.write(missing, token, only_missing=True)
        if written:
            metrics.TOKENS_RESEEDED.labels(user=self.user).inc()
            _log.warning("token_reseeded", user=self.user, keys=written,
                         expires_at=token.expires_at.isoformat())  # fmt: skip
        return written

    async def after_refused(self, account_name: str, refused: StoredToken) -> StoredToken:
        """Re-read once; if Redis holds the refused token still, log in afresh."""
        try:
            return await self.store.after_refused(account_name, refused)
        except AuthError:
            return await self._single_flight(account_name, None, refused=refused)

    def needs_renewal(self, token: StoredToken) -> bool:
        """Return whether 80 % of the life has passed or fewer than ``renew_before_s`` remain."""
        return self.store.clock() >= self.renew_at(token)

    def renew_at(self, token: StoredToken) -> datetime:
        """Return when ``token`` is due: 80 % of its life, or ``renew_before_s`` before expiry."""
        before = timedelta(seconds=self.config.renew_before_s)
        due = []
        if token.obtained_at is not None:
            lifetime = token.expires_at - token.obtained_at
            due.append(token.obtained_at + lifetime * self.config.renew_fraction)
            # A short-lived token (shorter than twice the margin) would otherwise be renewed
            # on every use; wait for half its life instead.
            before = min(before, lifetime / 2)
        due.append(token.expires_at - before)
        return min(due)

    async def login(self) -> StoredToken:
        """Log in afresh (no lockout, within the login cap); store the token under every key."""
        try:
            await self._check_lockout()
            await self._count_login()
            token = await self._store(await self._obtain(), "token_login")
        except (LoginFailed, Lockout) as e:
            self.failure = str(e)
            raise
        self.failure = None
        self.logins += 1
        return token

    async def keep(
        self,
        stop: asyncio.Event | None = None,
        *,
        ahead: bool = False,
        verify_every_s: float = 0.0,
    ) -> None:
        """Keep the user's token fresh until cancelled or ``stop`` is set: log in once, renew
        before it is due.

        Every process may run this: renewals are single-flight under the user's lock, and a
        process that finds a fresh token in Redis uses it. Locked out, it waits (reading
        Redis only); credentials refused, it stops (a refused login is never looped). At
        least every ``tokens.reseed_check_s`` it checks that Redis still holds the token's
        keys and writes back the ones it lost (``reseed``). A dialect that cannot renew
        (bridge) logs in once here; later logins happen on use, when due, unless ``ahead``
        (the token service, whose readers never log in): then it logs in again when due.
        Every ``verify_every_s`` (0: never) it asks Tradovate whether the token still works
        and replaces a refused one (``verified``).
        """
        account = self.account_names[0]
        backoff = _KEEP_MIN_S
        check_s = self.config.reseed_check_s
        if verify_every_s > 0:
            check_s = min(check_s, verify_every_s)
        renews = self.renews or ahead
        verified_at = -math.inf
        stopping = stop or asyncio.Event()
        # ``stop`` ends the loop even if a cancellation was lost on the way (a client library
        # that swallows CancelledError must not keep a stopped process renewing).
        while not stopping.is_set():
            now = self.store.clock()
            try:
                due = self.last
                if renews or due is None:
                    due = await self.token(account)
                if verify_every_s > 0 and time.monotonic() - verified_at >= verify_every_s:
                    due = await self.verified(account, due)
                    verified_at = time.monotonic()
                await self.reseed()
            except LoginFailed:
                _log.error("token_keeper_stopped", user=self.user, reason="login refused")
                return
            except Lockout as e:
                delay = (e.until - now).total_seconds()
            except BrokerError as e:
                _log.warning("token_keep_failed", user=self.user, error=str(e))
                delay, backoff = backoff, min(backoff * 2, _KEEP_MAX_S)
            except Exception:  # noqa: BLE001 - a keeper that dies silently renews nothing
                _log.exception("token_keep_failed", user=self.user)
                delay, backoff = backoff, min(backoff * 2, _KEEP_MAX_S)
            else:
                backoff = _KEEP_MIN_S
                delay = check_s
                if renews:
                    renew_in = (self.renew_at(due) - self.store.clock()).total_seconds()
                    delay = max(min(renew_in, check_s), min(_KEEP_MIN_S, check_s))
            # Failures back off up to _KEEP_MAX_S (each login counts against the hourly
            # cap); a lockout is waited out, but Redis is looked at again at least that often.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), min(max(delay, 0.0), _KEEP_MAX_S))

    async def verified(self, account_name: str, token: StoredToken) -> StoredToken:
        """Return ``token`` if Tradovate still accepts it, else a fresh one (logging in)."""
        if await self.accepts(token):
            return token
        _log.warning("token_refused", user=self.user, kind=self.kind,
                     expires_at=token.expires_at.isoformat())  # fmt: skip
        return await self.after_refused(account_name, token)

    async def accepts(self, token: StoredToken) -> bool:
        """Return whether Tradovate accepts ``token`` (one cheap authenticated read).

        False on 401; ``BrokerError`` when the answer says nothing about the token.
        """
        answer = await self.retry.run(
            lambda: self.http.request(
                "GET", self._probe_path, params=self._probe_params, token=token.access_token,
                budget_key=self.user, kind=RequestKind.AUTH,
            )
        )  # fmt: skip
        if answer.status == 401:
            return False
        if answer.status in (423, 429):
            await self._lock_out(f"HTTP {answer.status} on the token check")
        raise_for_status(answer, f"token check for {self.user}", lockout_s=self.config.lockout_s)
        return True

    async def check_login(self) -> StoredToken:
        """Log in once and return the token, without Redis: no lock, no login count, no write.

        For ``tradebridge init`` proving credentials where no Redis runs yet; everything
        else logs in with ``login`` (counted, single-flight, stored).
        """
        try:
            return await self._obtain()
        except (LoginFailed, Lockout) as e:
            self.failure = str(e)
            raise

    @abc.abstractmethod
    async def _obtain(self) -> StoredToken:
        """Send the dialect's login request; return the token it grants."""

    async def _refresh(self, candidate: StoredToken | None) -> StoredToken:
        """Return a fresh token given a still-usable one (None: there is none)."""
        del candidate  # without a renew call, the only way to a fresh token is a login
        return await self.login()

    async def _single_flight(
        self, account_name: str, current: StoredToken | None, refused: StoredToken | None = None
    ) -> StoredToken:
        await self._check_lockout()
        owner = secrets.token_hex(8)
        deadline = time.monotonic() + self.config.lock_wait_s
        while True:
            try:
                got = await self.store.redis.set(
                    self.lock_key, owner, nx=True, px=self.config.lock_ttl_ms
                )
            except RedisError as e:
                raise ConnectionLost(f"cannot take {self.lock_key} ({type(e).__name__})") from e
            if got:
                try:
                    return await self._renew_or_login(account_name, current, refused)
                finally:
                    await self._release(owner)
            # Another process renews: wait for it, then use what it wrote.
            await asyncio.sleep(0.05)
            fresh = await self.store.read(self.store.key_for(account_name))
            if fresh is not None and self._usable(fresh, refused) and not self.needs_renewal(fresh):
                return fresh
            if time.monotonic() > deadline:
                raise AuthError(
                    f"timed out waiting for another process to renew {self.user}'s token"
                )

    def _usable(self, token: StoredToken, refused: StoredToken | None) -> bool:
        if refused is not None and token.access_token == refused.access_token:
            return False
        if token.kind != self.kind:
            return False  # a token of the other dialect under our key is not ours to renew
        return token.remaining(self.store.clock()) > timedelta(seconds=self.config.expiry_margin_s)

    async def _release(self, owner: str) -> None:
        try:
            await self.store.redis.eval(_RELEASE, 1, self.lock_key, owner)
        except RedisError:
            _log.warning("token_lock_release_failed", user=self.user)  # expires by itself

    async def _renew_or_login(
        self, account_name: str, current: StoredToken | None, refused: StoredToken | None
    ) -> StoredToken:
        # Re-read under the lock: the previous holder may have renewed already.
        fresh = await self.store.read(self.store.key_for(account_name))
        if fresh is not None and self._usable(fresh, refused) and not self.needs_renewal(fresh):
            return fresh
        candidate = fresh if fresh is not None and self._usable(fresh, refused) else current
        if candidate is not None and not self._usable(candidate, refused):
            candidate = None
        return await self._refresh(candidate)

    async def _store(self, token: StoredToken, event: str) -> StoredToken:
        await self.store.write(self.keys, token)
        metrics.observe_token(self.user, token.expires_at)
        _log.info(event, user=self.user, kind=self.kind, expires_at=token.expires_at.isoformat())
        return token

    async def _count_login(self) -> None:
        # Sliding one-hour window in a sorted set: every process of this user counts here.
        now = time.time()
        try:
            await self.store.redis.zremrangebyscore(self.logins_key, 0, now - 3600)
            count = await self.store.redis.zcard(self.logins_key)
            if count >= self.config.max_logins_per_hour:
                oldest = await self.store.redis.zrange(self.logins_key, 0, 0, withscores=True)
                free_at = (float(oldest[0][1]) if oldest else now) + 3600
                until = datetime.fromtimestamp(free_at, UTC)
                message = (
                    f"{self.user} logged in {count} times in the last hour (cap "
                    f"{self.config.max_logins_per_hour}); no login before {until.isoformat()}"
                )
                self.alert(message)
                raise Lockout(message, until=until)
            await self.store.redis.zadd(self.logins_key, {secrets.token_hex(6): now})
            await self.store.redis.expire(self.logins_key, 3600)
        except RedisError as e:
            raise ConnectionLost(f"cannot count logins in Redis ({type(e).__name__})") from e

    async def _check_lockout(self) -> None:
        await self.store.lockouts.check(self.user)

    async def _lock_out(self, why: str) -> None:
        state = await self.store.lockouts.record(self.user, why, self.config.lockout_s)
        message = (
            f"Tradovate locked out {self.user} ({why}); no calls until "
            f"{state.until.isoformat(timespec='seconds')}. An operator must check the account."
        )
        self.alert(message)
        raise Lockout(message, until=state.until)

    def _refuse_login(self, text: str) -> None:
        metrics.AUTH_FAILURES.labels(_DIALECT_OF_KIND.get(self.kind, self.kind),
                                     "login_refused").inc()  # fmt: skip
        message = f"Tradovate refused the login of {self.user}: {redact_text(text)}"
        self.alert(message)
        raise LoginFailed(message)


class TokenManager(_SelfManagedTokens[NativeCredentials]):
    """Self-managed native tokens for one Tradovate user, shared by its accounts' keys."""

    kind = "native"
    renews = True

    def __init__(
        self,
        store: TokenStore,
        http: BrokerHttp,
        credentials: NativeCredentials,
        *,
        device_id: str,
        **options: Unpack[ManagerOptions],
    ) -> None:
        super().__init__(store, http, credentials, **options)
        self.device_id = device_id

    async def _refresh(self, candidate: StoredToken | None) -> StoredToken:
        if candidate is not None:
            try:
                return await self.renew(candidate)
            except AuthError:
                _log.warning("token_renew_refused", user=self.user)  # fall back to one login
        return await self.login()

    async def _obtain(self) -> StoredToken:
        """Log in with ``auth/accesstokenrequest`` (p-tickets waited out); return the token."""
        creds = self.credentials
        body: dict[str, Any] = {
            "name": creds.name,
            "password": creds.password.get_secret_value(),
            "appId": creds.app_id,
            "appVersion": creds.app_version,
            "deviceId": self.device_id,
            "cid": creds.cid,
            "sec": creds.sec.get_secret_value(),
        }
        data = await self._penalty_aware(
            lambda extra: self.http.request(
                "POST", "/auth/accesstokenrequest", json_body={**body, **extra},
                budget_key=self.user, kind=RequestKind.AUTH,
            ),
            "login",
        )  # fmt: skip
        return self._token_from(data, "login")

    async def renew(self, current: StoredToken) -> StoredToken:
        """Extend the session with ``auth/renewaccesstoken`` (GET) and store the new token."""
        data = await self._penalty_aware(
            lambda extra: self.http.request(
                "GET", "/auth/renewaccesstoken", token=current.access_token, budget_key=self.user,
                kind=RequestKind.AUTH, params={"p-ticket": extra["p-ticket"]} if extra else None,
            ),
            "renew",
        )  # fmt: skip
        token = await self._store(self._token_from(data, "renew", current), "token_renewed")
        self.renewals += 1
        self.failure = None
        return token

    async def _penalty_aware(
        self, send: Callable[[dict[str, Any]], Awaitable[HttpAnswer]], what: str
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        wait = 0.0
        for _ in range(self.config.max_penalty_resends + 1):
            answer = await self.retry.run(functools.partial(send, extra))
            if answer.status in (423, 429):
                await self._lock_out(f"HTTP {answer.status} on {what}")
            if answer.status == 401 and what == "renew":
                raise AuthError(f"{what} for {self.user}: HTTP 401, the session has ended")
            raise_for_status(answer, f"{what} for {self.user}", lockout_s=self.config.lockout_s)
            data = answer.body if isinstance(answer.body, dict) else None
            if data is None:
                raise AuthError(f"{what} for {self.user}: the answer is not a JSON object")
            if "p-ticket" not in data:
                if data.get("errorText"):
                    if what == "login":
                        self._refuse_login(str(data["errorText"]))
                    text = redact_text(str(data["errorText"]))
                    raise AuthError(f"Tradovate refused to renew {self.user}'s token: {text}")
                return data
            if data.get("p-captcha"):
                await self._lock_out(f"captcha penalty on {what}")
            wait = float(data.get("p-time") or 0)
            _log.warning("token_penalty", user=self.user, what=what, wait_s=wait)
            await self.sleep(wait)
            extra = {"p-ticket": data["p-ticket"]}
        raise RateLimited(
            f"{what} for {self.user}: still penalised after "
            f"{self.config.max_penalty_resends} resends",
            retry_after=wait,
        )

    def _token_from(
        self, data: dict[str, Any], what: str, previous: StoredToken | None = None
    ) -> StoredToken:
        token = data.get("accessToken")
        if not isinstance(token, str) or not token:
            raise AuthError(f"{what} for {self.user}: the answer carries no accessToken")
        try:
            expires = (
                parse_time(str(data["expirationTime"]))
                if data.get("expirationTime")
                else jwt_expiry(token)
            )
        except ValueError as e:
            raise AuthError(f"{what} for {self.user}: unreadable expirationTime") from e
        if expires is None:
            raise AuthError(f"{what} for {self.user}: the answer carries no expiry")
        user_id = data.get("userId", previous.user_id if previous else None)
        return StoredToken(
            access_token=token,
            expires_at=expires,
            kind="native",
            env=self.environment,
            user_id=int(user_id) if user_id is not None else None,
            md_access_token=data.get("mdAccessToken")
            or (previous.md_access_token if previous else None),
            obtained_at=self.store.clock(),
        )


class BridgeTokenManager(_SelfManagedTokens[BridgeCredentials]):
    """Self-managed TradingView-bridge tokens (``POST /authorize``) for one Tradovate user.

    The bridge has no renew call (reference §9.3: password-bearer tokens are never
    refreshed), so "renewing" is a fresh login shortly before expiry, under the same lock,
    login cap and lockout as native logins of that user. ``http`` is a client of the
    bridge base URL. Tokens are stored with ``kind: "tv"``.
    """

    kind = "tv"
    # §9.3: without an expiration, "probe with GET /accounts and log in again on 401".
    _probe_path = "/accounts"
    _probe_params = {"locale": "en"}  # noqa: RUF012 - a constant, never mutated

    async def _obtain(self) -> StoredToken:
        """Log in with ``POST /authorize`` (form, ``locale=en``); return the token."""
        form = {
            "locale": "en",
            "login": self.credentials.login,
            "password": self.credentials.password.get_secret_value(),
        }
        answer = await self.retry.run(
            lambda: self.http.request(
                "POST",
                "/authorize",
                params={"locale": "en"},
                form=form,
                budget_key=self.user,
                kind=RequestKind.AUTH,
            )
        )
        if answer.status in (423, 429):
            await self._lock_out(f"HTTP {answer.status} on the bridge login")
        if answer.status in (401, 403):
            self._refuse_login(f"HTTP {answer.status}")
        raise_for_status(answer, f"bridge login for {self.user}", lockout_s=self.config.lockout_s)
        body = answer.body if isinstance(answer.body, dict) else {}
        if body.get("s") == "error":
            self._refuse_login(str(body.get("errmsg") or "s:error without errmsg"))
        data = body.get("d") if body.get("s") == "ok" else None
        if not isinstance(data, dict):
            raise AuthError(f"bridge login for {self.user}: the answer is not {{s: ok, d: {{}}}}")
        return self._token_from(data)

    def _token_from(self, data: dict[str, Any]) -> StoredToken:
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(f"bridge login for {self.user}: the answer carries no access_token")
        now = self.store.clock()
        expires = _unix_time(data.get("expiration")) or jwt_expiry(token)
        if expires is None:
            # §9.3: expiration is optional; assume the short lifetime TradingView suggests.
            expires = now + timedelta(seconds=self.credentials.assumed_lifetime_s)
        return StoredToken(
            access_token=token,
            expires_at=expires,
            kind="tv",
            env=self.environment,
            obtained_at=now,
        )


def _unix_time(value: Any) -> datetime | None:
    """Return a UNIX timestamp (seconds, or milliseconds if that large) as UTC, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if number <= 0:
        return None
    if number > 1e11:  # milliseconds: seconds would be after the year 5000
        number /= 1000
    return datetime.fromtimestamp(number, UTC)


SelfManaged = TokenManager | BridgeTokenManager
# A manager's token kind -> the dialect label of /metrics.
_DIALECT_OF_KIND = {"native": "native", "tv": "tvbridge"}

# /healthz may be polled often: read Redis for the tokens at most this often.
_HEALTH_TTL_S = 1.5


@dataclass(frozen=True, slots=True)
class TokenHealth:
    """The state of every configured account's token, for ``/healthz`` (never a token)."""

    level: Literal["ok", "degraded"]
    detail: dict[str, Any]


class AccountTokens:
    """Each account's token source: its user's self-managed manager if any, else Redis.

    ``managers`` maps account names to managers; accounts of one user share one manager,
    so one login serves them all. Adapters take this as their ``TokenProvider``.
    """

    def __init__(
        self,
        store: TokenStore,
        managers: dict[str, SelfManaged],
        *,
        budget: RequestBudget | None = None,
    ) -> None:
        self.store = store
        self.managers = dict(managers)
        # The process's request budget (per user), shared by the managers and the adapters.
        self.budget = budget
        self._health: tuple[float, TokenHealth] | None = None

    def __repr__(self) -> str:
        users = sorted({m.user for m in self.managers.values()})
        return f"AccountTokens(self_managed_users={users!r})"

    @property
    def lockouts(self) -> Lockouts:
        """Return the per-user lockouts every token is checked against."""
        return self.store.lockouts

    def distinct_managers(self) -> list[SelfManaged]:
        """Return each manager once."""
        return list({id(m): m for m in self.managers.values()}.values())

    def _source(self, account_name: str) -> TokenProvider:
        return self.managers.get(account_name) or self.store

    async def token(self, account_name: str) -> StoredToken:
        """Return a valid token for the account (logging in or renewing if self-managed)."""
        return await self._source(account_name).token(account_name)

    async def after_refused(self, account_name: str, refused: StoredToken) -> StoredToken:
        """Return a different token after a 401 (a re-read, or a login if self-managed)."""
        return await self._source(account_name).after_refused(account_name, refused)

    async def keep(
        self, stop: asyncio.Event, *, ahead: bool = False, verify_every_s: float = 0.0
    ) -> None:
        """Keep every self-managed user's token fresh until ``stop`` is set (see ``keep``)."""
        keepers = [
            asyncio.create_task(
                m.keep(stop, ahead=ahead, verify_every_s=verify_every_s), name=f"tokens:{m.user}"
            )
            for m in self.distinct_managers()
        ]
        try:
            await stop.wait()
        finally:
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)

    async def aclose(self) -> None:
        """Share the lockouts noted so far, then close the managers' HTTP clients."""
        await self.lockouts.flush()
        for manager in self.distinct_managers():
            await manager.aclose()

    async def health(self, account_names: Sequence[str]) -> TokenHealth:
        """Report missing, expired and locked-out tokens from Redis alone (cached briefly)."""
        now_s = time.monotonic()
        if self._health is not None and now_s - self._health[0] < _HEALTH_TTL_S:
            return self._health[1]
        found = await self._read_health(account_names)
        self._health = (now_s, found)
        return found

    async def _read_health(self, account_names: Sequence[str]) -> TokenHealth:
        now = self.store.clock()
        user_for = self.store.user_for or (lambda _name: None)
        users = {name: user_for(name) for name in account_names}
        lockouts: dict[str, dict[str, str]] = {}
        for user in sorted({u for u in users.values() if u is not None}):
            lockout = await self.lockouts.current(user)
            if lockout is not None:
                lockouts[user] = {"until": iso_time(lockout.until), "reason": lockout.reason}
        accounts: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        for name in account_names:
            manager = self.managers.get(name)
            owner = users[name]
            entry: dict[str, Any] = {"user": owner, "self_managed": manager is not None}
            try:
                stored = await self.store.read(self.store.key_for(name))
            except AuthError as e:
                stored, entry["error"] = None, str(e)  # names the key, never the value
            if owner is not None and owner in lockouts:
                state, entry["until"] = "locked_out", lockouts[owner]["until"]
            elif stored is None:
                state = "unreadable" if "error" in entry else "missing"
            elif stored.remaining(now) <= timedelta(0):
                state = "expired"
            elif self.store.is_refused(self.store.key_for(name), stored):
                state = "refused"
            else:
                state = "ok"
            if stored is not None:
                entry["expires_at"] = iso_time(stored.expires_at)
                metrics.observe_token(owner, stored.expires_at)
            entry["state"] = state
            # A self-managed user's missing or expired token is obtained on first use,
            # unless its last login failed, or this process holds it and Redis lost it
            # (emptied): then other processes cannot read it until the keeper writes it back.
            obtainable = manager is not None and manager.failure is None
            if state == "missing" and manager is not None and manager.holds_valid_token():
                obtainable, entry["reseeding"] = False, True
            if state == "locked_out" or (state != "ok" and not obtainable):
                problems.append(name)
            if manager is not None and manager.failure is not None:
                entry["login_error"] = manager.failure
            accounts[name] = entry
        detail: dict[str, Any] = {"accounts": accounts, "locked_out": lockouts}
        if problems:
            detail["problems"] = problems
        return TokenHealth("degraded" if problems else "ok", detail)
