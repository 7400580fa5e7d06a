"""``BrokerPool``: one connected adapter per Tradovate user and dialect, built on first use.

Accounts of the same user share one adapter (one token, one user-sync socket, reference §7),
so ``get`` for two such accounts returns the same instance. Every adapter of the pool draws
on one request budget, a bucket per user, which the user's logins share too when the token
provider is ``AccountTokens``. Every HTTP call an adapter makes is also handed to
``capture()`` blocks running in the same task, which is how the dispatcher files the calls of
one placement with its ledger transition.

With ``AccountTokens`` as token provider, an answer that locks the user out (HTTP 423 or
429, a captcha penalty: reference §6.3, §7) is recorded in Redis as that user's lockout,
which every process then honours before calling (``Lockouts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar

from tradebridge._aio import reraise_if_cancelling
from tradebridge.brokers.auth import AccountTokens
from tradebridge.brokers.base import AccountInfo, Broker
from tradebridge.brokers.factory import budget_of, build_broker, lockout_user, request_budget
from tradebridge.brokers.http import BrokerCall, BrokerHttp, CallListener
from tradebridge.config import Settings
from tradebridge.obs.logging import get_logger
from tradebridge.store.tokens import Lockouts, TokenProvider

_log = get_logger("tradebridge.brokers.pool")
_captured: ContextVar[list[BrokerCall] | None] = ContextVar("tradebridge_captured", default=None)


@contextlib.contextmanager
def capture() -> Iterator[list[BrokerCall]]:
    """Collect the broker calls made by this task (and tasks it starts) inside the block."""
    calls: list[BrokerCall] = []
    token = _captured.set(calls)
    try:
        yield calls
    finally:
        _captured.reset(token)


def _deliver(call: BrokerCall) -> None:
    calls = _captured.get()
    if calls is not None:
        calls.append(call)


def _capturing() -> bool:
    return _captured.get() is not None


def _never() -> bool:
    return False


def attach_listeners(
    http: BrokerHttp, lockouts: Lockouts | None, user: str, lockout_s: float
) -> None:
    """Give a client of the pool its listeners: ``capture()`` blocks (which keep the bodies),
    and the user's lockouts (status and penalty answers only), if they are kept."""
    http.add_listener(_deliver, bodies=_capturing)
    if lockouts is not None:
        http.add_listener(_lockout_listener(lockouts, user, lockout_s), bodies=_never)


def lockout_reason(call: BrokerCall) -> str | None:
    """Return why ``call``'s answer locks its user out (423, 429, captcha), else None."""
    where = f"{call.method} {call.path}"
    if call.status in (423, 429):
        return f"HTTP {call.status} on {where}"
    body = call.response_body
    if call.status == 200 and isinstance(body, dict) and body.get("p-captcha") is True:
        return f"captcha penalty on {where}"
    return None


def _lockout_listener(lockouts: Lockouts, user: str, seconds: float) -> CallListener:
    def listen(call: BrokerCall) -> None:
        reason = lockout_reason(call)
        if reason is None:
            return
        state = lockouts.note(user, reason, seconds)
        _log.error(
            "token_alert",
            message=f"Tradovate locked out {user} ({reason}); no calls until "
            f"{state.until.isoformat(timespec='seconds')}. An operator must check the account.",
        )

    return listen


def _http_of(broker: Broker) -> BrokerHttp | None:
    # The adapters keep their client as ``http`` (native) or ``_http`` (bridge).
    for name in ("http", "_http"):
        http = getattr(broker, name, None)
        if isinstance(http, BrokerHttp):
            return http
    return None


class BrokerPool:
    """The adapters of the configured accounts, shared per Tradovate user."""

    def __init__(self, settings: Settings, token_provider: TokenProvider) -> None:
        self.settings = settings
        self.tokens = token_provider
        self.lockouts = (
            token_provider.lockouts if isinstance(token_provider, AccountTokens) else None
        )
        self.budget = budget_of(token_provider) or request_budget(settings)
        self._brokers: dict[tuple[str, str], Broker] = {}
        self._accounts: dict[tuple[str, str], dict[str, AccountInfo]] = {}
        self._listing: dict[tuple[str, str], asyncio.Lock] = {}
        self._lock = asyncio.Lock()
        self._tracking_owner: object | None = None

    def _key(self, account_name: str) -> tuple[str, str]:
        account = self.settings.account(account_name)
        return (account.dialect.value, lockout_user(self.settings, account))

    def tracking_key(self) -> str:
        """Return the name of the event streams this pool's adapters follow, the same in
        every process configured alike: each account's dialect, user and name (processes
        that serve other accounts follow other streams: a name of their own)."""
        served = sorted(":".join((*self._key(n), n)) for n in self.account_names())
        return "tracker:" + hashlib.sha256("\n".join(served).encode()).hexdigest()[:32]

    def claim_tracking(self, owner: object) -> bool:
        """Return whether ``owner`` runs tracking for this pool (the first to ask does)."""
        if self._tracking_owner is None:
            self._tracking_owner = owner
        return self._tracking_owner is owner

    def account_names(self) -> list[str]:
        """Return the configured account names."""
        return [a.name for a in self.settings.accounts]

    async def get(self, account_name: str) -> Broker:
        """Return the adapter serving ``account_name``; ``ConfigError`` if not configured."""
        key = self._key(account_name)
        broker = self._brokers.get(key)
        if broker is not None:
            return broker
        async with self._lock:
            broker = self._brokers.get(key)
            if broker is None:
                broker = build_broker(self.settings, account_name, self.tokens, budget=self.budget)
                http = _http_of(broker)
                if http is not None:
                    attach_listeners(http, self.lockouts, key[1], self.settings.tokens.lockout_s)
                self._brokers[key] = broker
        return broker

    async def account_info(self, account_name: str) -> AccountInfo | None:
        """Return the broker's listing of ``account_name`` (cached; re-read when missing).

        One listing per user at a time: the accounts of a fan-out that all miss the cache
        together wait for the first one's listing instead of each asking the broker.
        """
        key = self._key(account_name)
        known = self._accounts.get(key)
        if known is not None and account_name in known:
            return known[account_name]
        broker = await self.get(account_name)
        lock = self._listing.setdefault(key, asyncio.Lock())
        async with lock:
            known = self._accounts.get(key)
            if known is None or account_name not in known:
                known = {a.name: a for a in await broker.accounts()}
                self._accounts[key] = known
        return known.get(account_name)

    async def warm(self, instruments: Mapping[str, Sequence[str]] | None = None) -> None:
        """Fill the caches the first order needs before it comes: each user's account list,
        and the contracts of ``instruments`` (per account: what it traded lately), once per
        user, where the adapter looks contracts up (native).

        Best effort: a failure is logged and left to the order path, which reads again.
        """
        users: dict[tuple[str, str], str] = {}
        for name in self.account_names():
            users.setdefault(self._key(name), name)
        results = await asyncio.gather(
            *(self.account_info(name) for name in users.values()), return_exceptions=True
        )
        for name, result in zip(users.values(), results, strict=True):
            if isinstance(result, BaseException):
                _log.warning("broker_warm_failed", account=name, error=str(result))
        wanted: dict[tuple[tuple[str, str], str], str] = {}  # (user, instrument) -> account
        configured = set(self.account_names())
        for account, names in (instruments or {}).items():
            if account in configured:
                for instrument in names:
                    wanted.setdefault((self._key(account), instrument), account)
        if wanted:
            await asyncio.gather(
                *(self._warm_contract(instrument, account)
                  for (_, instrument), account in wanted.items())
            )  # fmt: skip

    async def _warm_contract(self, instrument: str, account: str) -> None:
        try:
            broker = await self.get(account)
            resolve = getattr(broker, "resolve_contract", None)  # native only: it looks up
            if resolve is not None:
                await resolve(instrument, account)
        except Exception as e:  # noqa: BLE001 - an expired or unknown contract: not needed
            reraise_if_cancelling()
            _log.info("contract_warm_skipped", account=account, instrument=instrument,
                      error=str(e)[:200])  # fmt: skip

    async def preconnect(self, accounts: Sequence[str]) -> None:
        """Open a connection to the broker for each of ``accounts`` about to send an order
        (``BrokerHttp.preconnect``), per client; accounts whose adapter is not made yet (or
        that are not configured) are skipped."""
        configured = set(self.account_names())
        built = [self._brokers.get(self._key(name)) for name in accounts if name in configured]
        clients = Counter(http for b in built if b is not None and (http := _http_of(b)))
        await asyncio.gather(*(http.preconnect(count) for http, count in clients.items()))

    async def brokers(self) -> list[tuple[str, Broker]]:
        """Return one (account name, adapter) pair per distinct adapter of the settings."""
        out: dict[int, tuple[str, Broker]] = {}
        for name in self.account_names():
            broker = await self.get(name)
            out.setdefault(id(broker), (name, broker))
        return list(out.values())

    def built(self) -> list[Broker]:
        """Return the adapters made so far (none is made here: for watchers, not orders)."""
        return list(self._brokers.values())

    async def close(self) -> None:
        """Close every adapter."""
        brokers, self._brokers = list(self._brokers.values()), {}
        # Side by side, each in a task of its own: a failure, or the cancellation of the
        # task closing them (a shutdown by cancellation), must not leave the others open.
        closed = await asyncio.gather(*(b.close() for b in brokers), return_exceptions=True)
        for failed in closed:
            if isinstance(failed, Exception):
                _log.error("broker_close_failed", error=f"{type(failed).__name__}: {failed}"[:300])
