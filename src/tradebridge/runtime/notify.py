"""Notifications: tell people when something needs them (docs/notifications.md).

Two tasks per ``serve`` process, beside the order path and never on it:

* ``Notifier`` (the watcher) looks every ``[notify] interval_s`` at what the process already
  knows: the token health of ``/healthz`` (authentication failures, lockouts, tokens close to
  expiry), the kill-switch and risk watches, the user-sync WebSockets of its adapters, and the
  ledger (outcomes unknown past a bound, the pending queue, rows denied or rejected, rows
  reconcile corrected). It turns each into a condition keyed by what it is about
  (``lockout:alice``) or, for rows, into one message per kind and window.
* ``Sender`` delivers the messages: one bounded queue and one task per channel (a channel that
  hangs holds up only itself), each attempt in a thread of its own pool under
  ``send_timeout_s``, failures retried with backoff (stamina), and every delivery recorded in
  the ledger's ``notifications`` table with the channel's name (never its URL), outcome and
  attempts. A full queue drops the message, recorded as ``dropped``.

**Several workers, one database.** Every worker runs a notifier; the ledger makes them tell
each thing once (``store/ledger/notifications.py``). A condition's row in
``notification_state`` is moved by one statement that says whether this caller sends
(raised, changed, reminder): of two workers seeing one lockout, one sends. A condition ends
when no worker has seen it on for three intervals; the worker whose statement ends it sends
"resolved" (only for an episode that was announced). Each denied, rejected or reconciled row
is claimed once (``notified_signals``). Delivery is at most once: a worker that dies between
its claim and the send loses that message.

**Rate limits.** A condition is announced when it begins, at most once per ``window_s``
(a condition that flaps is told once per window, its changes at most once per window), and
reminded every ``repeat_s`` while it holds; its resolution is always told. Denied and
rejected rows go out as one message per kind and ``rows_window_s``, listing every row since
the previous one.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import apprise
import stamina

from tradebridge._aio import cancel_and_wait, reraise_if_cancelling
from tradebridge.brokers.auth import AccountTokens
from tradebridge.brokers.pool import BrokerPool
from tradebridge.config import NotifyChannel, NotifyConfig, Settings
from tradebridge.domain.clock import utcnow
from tradebridge.domain.enums import Environment
from tradebridge.domain.notices import Notice, NoticeKind, Observation, Phase
from tradebridge.errors import ConfigError
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger, redact_text
from tradebridge.runtime.health import Condition
from tradebridge.store.kill import KillSwitchWatch
from tradebridge.store.ledger import Ledger
from tradebridge.store.ledger.notifications import SendRecord

if TYPE_CHECKING:
    from tradebridge.dispatch.reconcile import LostOrder

_log = get_logger("tradebridge.runtime.notify")

TITLES: dict[NoticeKind, str] = {
    NoticeKind.DENIED: "signals denied",
    NoticeKind.REJECTED: "orders rejected by the broker",
    NoticeKind.UNKNOWN_UNRESOLVED: "order outcomes still unknown",
    NoticeKind.AUTH_FAILED: "Tradovate authentication failing",
    NoticeKind.LOCKOUT: "Tradovate lockout",
    NoticeKind.TOKEN_EXPIRING: "token about to expire, not renewed",
    NoticeKind.WEBSOCKET_DOWN: "WebSocket down",
    NoticeKind.QUEUE_BACKLOG: "signal queue backing up",
    NoticeKind.KILL_SWITCH: "kill switch on",
    NoticeKind.RISK_LIMIT: "risk limit reached",
    NoticeKind.RECONCILE_DIVERGENCE: "reconcile found the broker disagreeing",
    NoticeKind.TEST: "test message",
}
_ROWS_LISTED = 20  # rows named in one message; the rest are counted


# --- channels ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Channel:
    """One configured channel: its name, its apprise URL (a secret) and the kinds it takes."""

    name: str
    url: str = field(repr=False)
    events: frozenset[NoticeKind] = frozenset()

    @property
    def label(self) -> str:
        """Return how logs and the ledger name the channel: its name and scheme, no secret."""
        return f"{self.name} ({urlsplit(self.url).scheme or '?'})"

    def wants(self, kind: NoticeKind) -> bool:
        """Return whether notices of ``kind`` go to this channel (tests go everywhere)."""
        return not self.events or kind in self.events or kind is NoticeKind.TEST


def build_channels(config: NotifyConfig) -> list[Channel]:
    """Return the configured channels; ``ConfigError`` names a missing or unusable URL's
    variable (never the URL)."""
    _load_plugins()
    missing = config.missing_urls()
    if missing:
        raise ConfigError(
            "notification channels without a URL: set "
            + ", ".join(missing)
            + " (in the environment or the secrets file; docs/notifications.md)"
        )
    channels = []
    for entry in config.channels:
        url = _url_of(entry)
        if apprise.Apprise.instantiate(url) is None:
            scheme = urlsplit(url).scheme or "none"
            raise ConfigError(
                f"notify channel {entry.name}: apprise cannot use the URL in "
                f"{entry.url_variable} (scheme {scheme!r}; docs/notifications.md lists some)"
            )
        channels.append(Channel(entry.name, url, frozenset(entry.events)))
    return channels


def _load_plugins() -> None:
    # apprise loads its plugins on first use; its email plugin imports the stdlib's imghdr,
    # deprecated since 3.11 (removed in 3.13, where apprise shims it): not ours to warn about.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
        apprise.Apprise.instantiate("json://localhost")


def _url_of(entry: NotifyChannel) -> str:
    assert entry.url is not None  # missing_urls() said so
    return entry.url.get_secret_value()


def check_notify(settings: Settings) -> None:
    """Refuse (``ConfigError``) notification settings ``serve`` could not send with."""
    if settings.notify.active:
        build_channels(settings.notify)


def scrub(text: str, url: str) -> str:
    """Return ``text`` without any secret part of ``url`` (user, password, path, query)."""
    parts = urlsplit(url)
    pieces = {parts.username or "", parts.password or "", parts.netloc}
    pieces.update(p for p in parts.path.split("/") if p)
    pieces.update(value for _, value in parse_qsl(parts.query))
    pieces.add(url)
    for piece in sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True):
        text = text.replace(piece, "***")
    return redact_text(text)


# --- sending ----------------------------------------------------------------------------------


class _Undelivered(Exception):
    """One attempt at a channel failed (the reason, scrubbed)."""


@dataclass
class _ChannelHealth:
    """How a channel's deliveries went since the process started (``/healthz``)."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    failing: bool = False  # its last delivery failed (cleared by the next one sent)
    last_error: str | None = None  # scrubbed of the URL's parts
    dropped_at: float | None = None  # monotonic time of the last message dropped


@dataclass
class _Queued:
    notice: Notice
    message_id: str
    queued_at: datetime


class Sender:
    """Delivers notices to the channels: a bounded queue and a task per channel."""

    def __init__(
        self, channels: Sequence[Channel], config: NotifyConfig, *, ledger: Ledger | None = None
    ) -> None:
        self.channels = list(channels)
        self.config = config
        self.ledger = ledger
        self._queues: dict[str, asyncio.Queue[_Queued]] = {
            c.name: asyncio.Queue(config.queue_size) for c in self.channels
        }
        self._unrecorded: list[SendRecord] = []
        self._busy = 0  # deliveries under way
        # Apprise's plugins block (requests, smtplib): each attempt runs in a thread of this
        # pool, never the loop's default one, so a channel that hangs starves only itself.
        self._threads = ThreadPoolExecutor(
            max_workers=max(2, 2 * len(self.channels)), thread_name_prefix="notify"
        )
        self._apprise = {c.name: _apprise_of(c) for c in self.channels}
        self._names = {c.label: c.name for c in self.channels}
        self.health = {c.name: _ChannelHealth() for c in self.channels}

    def submit(self, notice: Notice) -> None:
        """Queue ``notice`` for every channel that takes it; never waits (a full queue drops
        the message for that channel, recorded as ``dropped``)."""
        queued = _Queued(notice, uuid.uuid4().hex, utcnow())
        for channel in self.channels:
            if not channel.wants(notice.kind):
                continue
            try:
                self._queues[channel.name].put_nowait(queued)
            except asyncio.QueueFull:
                _log.warning("notification_dropped", channel=channel.label, key=notice.key)
                self._note(_record(channel, queued, "dropped", 0, "the channel's queue is full"))

    async def run(self) -> None:
        """Deliver queued notices until cancelled (one task per channel)."""
        try:
            async with asyncio.TaskGroup() as group:
                for channel in self.channels:
                    group.create_task(self._serve(channel), name=f"notify:{channel.name}")
        finally:
            self.close()

    def close(self) -> None:
        """Let the sending threads go (one stuck in a socket ends by its own timeout)."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _serve(self, channel: Channel) -> None:
        queue = self._queues[channel.name]
        while True:
            queued = await queue.get()
            self._busy += 1
            try:
                self._note(await self.deliver(channel, queued))
                await self.flush()
            finally:
                self._busy -= 1
            reraise_if_cancelling()  # a cancel lost inside the delivery (see _aio)

    async def send_now(self, notice: Notice) -> list[SendRecord]:
        """Deliver ``notice`` to every channel that takes it now, at once; return how each
        went (``tradebridge notify test``)."""
        queued = _Queued(notice, uuid.uuid4().hex, utcnow())
        wanted = [c for c in self.channels if c.wants(notice.kind)]
        records = await asyncio.gather(*(self.deliver(c, queued) for c in wanted))
        for record in records:
            self._note(record)
        await self.flush()
        return list(records)

    async def deliver(self, channel: Channel, queued: _Queued) -> SendRecord:
        """Try ``channel`` with retries and backoff; return the delivery's record."""
        cfg = self.config
        attempts = 0
        error: str | None = None
        try:
            async for attempt in stamina.retry_context(
                on=(_Undelivered, TimeoutError),
                attempts=cfg.attempts,
                timeout=None,
                wait_initial=cfg.retry_wait_s,
                wait_max=cfg.retry_max_s,
                wait_jitter=cfg.retry_wait_s,
            ):
                with attempt:
                    attempts += 1
                    await self._attempt(channel, queued.notice)
        except (_Undelivered, TimeoutError) as e:
            error = str(e) or f"no answer within {cfg.send_timeout_s} s"
            _log.warning("notification_failed", channel=channel.label, key=queued.notice.key,
                         attempts=attempts, error=error)  # fmt: skip
            return _record(channel, queued, "failed", attempts, error)
        return _record(channel, queued, "sent", attempts, None)

    async def _attempt(self, channel: Channel, notice: Notice) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.config.send_timeout_s
        async with asyncio.timeout(timeout):
            ok, why = await loop.run_in_executor(
                self._threads, _send_blocking, self._apprise[channel.name], notice, timeout
            )
        if not ok:
            raise _Undelivered(scrub(why, channel.url))

    def _note(self, record: SendRecord) -> None:
        metrics.NOTIFICATIONS.labels(kind=record.kind, outcome=record.outcome).inc()
        self._unrecorded.append(record)
        health = self.health.get(self._names.get(record.channel, ""))
        if health is None:
            return
        if record.outcome == "sent":
            health.sent += 1
            health.failing = False
        elif record.outcome == "failed":
            health.failed += 1
            health.failing, health.last_error = True, record.error
        else:
            health.dropped += 1
            health.dropped_at = time.monotonic()

    def channel_problems(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Return each channel's counts by name, and the channels in trouble with why: its
        last delivery failed, or its queue dropped a message within ``window_s``."""
        now = time.monotonic()
        channels: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for name, health in self.health.items():
            channels[name] = {
                "sent": health.sent,
                "failed": health.failed,
                "dropped": health.dropped,
                "queued": self._queues[name].qsize(),
            }
            why = []
            if health.failing:
                why.append(f"its last delivery failed: {(health.last_error or '')[:200]}")
            if health.dropped_at is not None and now - health.dropped_at < self.config.window_s:
                why.append("its queue was full: messages dropped")
            if why:
                problems[name] = "; ".join(why)
        return channels, problems

    async def flush(self) -> None:
        """Write the deliveries not yet recorded to the ledger (kept for later if it fails)."""
        if self.ledger is None:
            self._unrecorded.clear()
            return
        if not self._unrecorded:
            return
        records, self._unrecorded = self._unrecorded, []
        try:
            # Shielded: a stop during the write still records what was delivered.
            await asyncio.shield(self.ledger.record_sends(records))
        except Exception as e:  # noqa: BLE001 - kept and written with the next ones
            reraise_if_cancelling()
            _log.warning("notification_record_failed", error=type(e).__name__)
            self._unrecorded = (records + self._unrecorded)[-1000:]

    def pending(self) -> int:
        """Return the notices waiting in the channels' queues or being delivered."""
        return sum(q.qsize() for q in self._queues.values()) + self._busy


def _apprise_of(channel: Channel) -> Any:
    sender = apprise.Apprise()
    if not sender.add(channel.url):
        raise ConfigError(f"notify channel {channel.name}: apprise cannot use its URL")
    return sender


def _send_blocking(sender: Any, notice: Notice, timeout_s: float) -> tuple[bool, str]:
    """Send through apprise (in a worker thread); return whether it went, and why not."""
    try:
        result = sender.notify(
            body=notice.body, title=notice.title, notify_type=notice.severity, timeout=timeout_s
        )
    except Exception as e:  # noqa: BLE001 - a plugin's error is this attempt's failure
        return False, type(e).__name__
    if result:
        return True, ""
    said = [
        entry.message for entry in result.logs() if entry.level in {"WARNING", "ERROR", "CRITICAL"}
    ]
    return False, ("; ".join(said[-3:]) or "the channel did not take it")[:500]


def _record(channel: Channel, queued: _Queued, outcome: str, attempts: int, error: str | None
            ) -> SendRecord:  # fmt: skip
    notice = queued.notice
    return SendRecord(
        queued.message_id, notice.key, notice.kind.value, notice.phase.value, notice.title,
        notice.body, channel.label, outcome, attempts, error, queued.queued_at,
    )  # fmt: skip


# --- watching ---------------------------------------------------------------------------------


Source = Callable[[], Awaitable[list[Observation]]]


class Notifier:
    """Watches what the process knows and queues notices on ``sender``; see the module doc."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        sender: Sender,
        *,
        tokens: AccountTokens | None = None,
        kill: KillSwitchWatch | None = None,
        risk: Any = None,  # runtime.risk_watch.RiskWatch (its ``current`` standings)
        pool: BrokerPool | None = None,
        lost: Callable[[], Sequence[LostOrder]] | None = None,
        judging: Callable[[], frozenset[str] | None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.config = settings.notify
        self.ledger = ledger
        self.sender = sender
        self._clock = clock
        self._started = clock()
        self._footer = (
            f"{'LIVE' if settings.tradovate.environment is Environment.LIVE else 'demo'}"
            f" · {socket.gethostname()}"
        )
        self.sources: dict[str, Source] = {
            "unresolved": self._unresolved,
            "queue": self._queue,
            "positions": self._positions,
        }
        if tokens is not None:
            self.sources["tokens"] = lambda: self._tokens(tokens)
        if kill is not None:
            self.sources["kill_switch"] = lambda: self._kill(kill)
        if risk is not None:
            self.sources["risk"] = lambda: self._risk(risk)
        if pool is not None:
            self.sources["websocket"] = lambda: self._websockets(pool)
        if lost is not None:
            self.sources["lost_orders"] = lambda: self._lost_orders(lost, judging)
        self._keys: dict[str, list[str]] = {}  # the keys each source saw on last time
        # What each source cannot judge yet, held on: (keys, key prefixes).
        self._holds: dict[str, tuple[list[str], list[str]]] = {}
        self._failing: dict[str, str] = {}
        self._ws_down: dict[int, float] = {}  # user id -> monotonic time first seen down
        self.ticks = 0

    async def run(self) -> None:
        """Run the sender and watch every ``interval_s`` until cancelled."""
        sending = asyncio.create_task(self.sender.run(), name="notify-sender")
        try:
            while True:
                if sending.done():
                    sending.result()  # raises what ended it
                try:
                    await self.tick()
                except Exception as e:  # noqa: BLE001 - the watcher outlives a database outage
                    reraise_if_cancelling()
                    if "tick" not in self._failing:
                        _log.warning("notifier_failing", error=type(e).__name__)
                    self._failing["tick"] = type(e).__name__
                else:
                    self._failing.pop("tick", None)
                reraise_if_cancelling()  # a cancel lost inside the tick (see _aio)
                await asyncio.sleep(self.config.interval_s)
        finally:
            await cancel_and_wait(sending)

    async def tick(self) -> None:
        """Look once: conditions on and off, rows to tell; queue the notices due."""
        seen: list[Observation] = []
        for name, source in self.sources.items():
            seen.extend(await self._read(name, source))
        cfg = self.config
        for found in seen:
            phase, opened_at = await self.ledger.observe_condition(
                found.key, found.kind.value, fingerprint=found.fingerprint,
                summary=found.summary, token=uuid.uuid4().hex, window_s=cfg.window_s,
                repeat_s=cfg.repeat_s,
            )  # fmt: skip
            if phase is not None:
                self.sender.submit(self._condition_notice(found, Phase(phase), opened_at))
        on_here = [key for keys in self._keys.values() for key in keys]
        # Seen on now (their last_seen_at), so no notifier resolves them this grace.
        await self.ledger.hold_conditions(
            [key for keys, _ in self._holds.values() for key in keys],
            [prefix for _, prefixes in self._holds.values() for prefix in prefixes],
        )
        grace = 3 * cfg.interval_s + 2.0
        for ended in await self.ledger.resolve_unseen(on_here, grace):
            if ended.announced:
                self.sender.submit(self._resolved_notice(ended.key, NoticeKind(ended.kind),
                                                         ended.summary, ended.opened_at,
                                                         ended.resolved_at))  # fmt: skip
        await self._rows()
        await self.sender.flush()
        self.ticks += 1

    async def _read(self, name: str, source: Source) -> list[Observation]:
        try:
            async with asyncio.timeout(max(self.config.interval_s, 5.0)):
                found = await source()
        except Exception as e:  # noqa: BLE001 - one unreadable source must not stop the rest
            reraise_if_cancelling()
            if name not in self._failing:
                _log.warning("notify_source_unreadable", source=name, error=type(e).__name__)
            self._failing[name] = type(e).__name__
            # What it saw on stays on here: an unreadable source resolves nothing.
            return []
        self._failing.pop(name, None)
        self._keys[name] = [o.key for o in found]
        return found

    def condition(self) -> Callable[[], Awaitable[Condition]]:
        """Return the ``notify`` condition of ``/healthz``: degraded while a channel's last
        delivery failed, its queue dropped messages lately, or a source cannot be read;
        channels are named by name, never by URL."""

        async def check() -> Condition:
            channels, problems = self.sender.channel_problems()
            detail: dict[str, Any] = {"channels": channels}
            if problems:
                detail["failing"] = problems
            if self._failing:
                detail["unreadable"] = dict(self._failing)  # source -> error type
            return Condition("degraded" if problems or self._failing else "ok", detail)

        return check

    # --- conditions -------------------------------------------------------------------------

    async def _unresolved(self) -> list[Observation]:
        bound = timedelta(seconds=self.config.unknown_after_s)
        count = await self.ledger.count_unresolved(unknown_bound=bound)
        if not count:
            return []
        rows = await self.ledger.unresolved(unknown_bound=bound, limit=_ROWS_LISTED)
        lines = [
            f"{r.signal_id} ({r.account_name}, {r.status.value}): {r.error_message or 'no answer'}"
            for r in rows
        ]
        if count > len(rows):
            lines.append(f"… and {count - len(rows)} more")
        return [
            Observation(
                NoticeKind.UNKNOWN_UNRESOLVED, "unknown_unresolved",
                f"{count} order outcome(s) unknown for more than "
                f"{self.config.unknown_after_s:g} s or waiting for review",
                "\n".join(lines), _fingerprint(r.signal_id for r in rows),
            )
        ]  # fmt: skip

    async def _lost_orders(
        self,
        lost: Callable[[], Sequence[LostOrder]],
        judging: Callable[[], frozenset[str] | None] | None,
    ) -> list[Observation]:
        # An account whose orders reconcile is still counting keeps a notice that is on
        # (raised before a restart: the new process starts counting from nothing), and all
        # do until reconcile has read the open rows at all: not resolved, then raised again.
        counting = frozenset() if judging is None else judging()
        self._holds["lost_orders"] = (
            ([], ["lost_orders:"]) if counting is None
            else ([f"lost_orders:{account}" for account in sorted(counting)], [])
        )  # fmt: skip
        by_account: dict[str, list[LostOrder]] = {}
        for order in lost():
            by_account.setdefault(order.account, []).append(order)
        observations = []
        for account, orders in sorted(by_account.items()):
            orders.sort(key=lambda o: o.first_at)
            lines = [
                f"{o.signal_id} (order {o.order_id}): unknown since "
                f"{o.first_at:%Y-%m-%d %H:%M:%S} UTC, {o.misses} answers"
                for o in orders[:_ROWS_LISTED]
            ]
            if len(orders) > _ROWS_LISTED:
                lines.append(f"… and {len(orders) - _ROWS_LISTED} more")
            lines.append(
                "Tradovate answers that it has no such order, yet the ledger holds it open. The "
                "rows stay open (nothing is guessed): check the account "
                f"(`tradebridge orders {account}`, `tradebridge trace <signal>`)."
            )
            found = Observation(
                NoticeKind.RECONCILE_DIVERGENCE, f"lost_orders:{account}",
                f"{len(orders)} open order(s) of {account} unknown to Tradovate",
                "\n".join(lines), _fingerprint(o.signal_id for o in orders),
            )  # fmt: skip
            observations.append(found)
        return observations

    async def _queue(self) -> list[Observation]:
        pending, oldest_s = await self.ledger.queue_backlog()
        cfg = self.config
        if pending < cfg.queue_depth and oldest_s < cfg.queue_age_s:
            return []
        return [
            Observation(
                NoticeKind.QUEUE_BACKLOG, "queue_backlog",
                f"{pending} signal(s) pending, the oldest waiting {oldest_s:.0f} s",
                "Workers are not keeping up, or none is running (dispatcher.workers), or an "
                "account is held by a row in flight.",
            )
        ]  # fmt: skip

    async def _positions(self) -> list[Observation]:
        return [
            Observation(
                NoticeKind.RECONCILE_DIVERGENCE, f"position:{c.account_name}:{c.contract}",
                f"{c.account_name} holds {c.broker_net:+} {c.contract} at Tradovate; "
                f"tradebridge's orders explain {c.ours + c.accepted:+} "
                f"({c.unexplained:+} unexplained)",
                "A trade by hand or by another tool, a fill that never reached the ledger, or "
                "a liquidation by the broker. Check the account (`tradebridge positions`); "
                f"`tradebridge reconcile accept {c.account_name}` takes the position as it is.",
                fingerprint=str(c.unexplained),
            )
            for c in await self.ledger.position_checks()
            if c.diverged_since is not None
        ]  # fmt: skip

    async def _tokens(self, tokens: AccountTokens) -> list[Observation]:
        found = await tokens.health([a.name for a in self.settings.accounts])
        detail = found.detail
        out: list[Observation] = []
        for user, lockout in sorted(detail.get("locked_out", {}).items()):
            out.append(Observation(
                NoticeKind.LOCKOUT, f"lockout:{user}",
                f"Tradovate locked out {user} until {lockout['until']}: {lockout['reason']}",
                "No call is made for this user until then; its accounts take no orders.",
                fingerprint=str(lockout["until"]),
            ))  # fmt: skip
        problems = set(detail.get("problems", []))
        failing: dict[str, list[str]] = {}
        expiring: dict[str, list[str]] = {}
        now = self._clock()
        for name, entry in sorted(detail.get("accounts", {}).items()):
            subject = entry.get("user") or name
            state = entry.get("state")
            if name in problems and state != "locked_out":
                why = entry.get("login_error") or entry.get("error") or f"token {state}"
                failing.setdefault(subject, []).append(f"{name}: {redact_text(str(why))}")
            elif state == "ok" and entry.get("expires_at"):
                left = (datetime.fromisoformat(entry["expires_at"]) - now).total_seconds()
                if left < self.config.token_expiring_s:
                    expiring.setdefault(subject, []).append(
                        f"{name}: expires at {entry['expires_at']} ({left:.0f} s left)"
                    )
        for subject, lines in failing.items():
            out.append(Observation(
                NoticeKind.AUTH_FAILED, f"auth_failed:{subject}",
                f"authentication failing for {subject}", "\n".join(lines),
                _fingerprint(lines),
            ))  # fmt: skip
        for subject, lines in expiring.items():
            out.append(Observation(
                NoticeKind.TOKEN_EXPIRING, f"token_expiring:{subject}",
                f"the token of {subject} expires soon and has not been renewed",
                "\n".join(lines),
            ))  # fmt: skip
        return out

    async def _kill(self, kill: KillSwitchWatch) -> list[Observation]:
        found = kill.current
        out: list[Observation] = []
        if found.global_on:
            switch = found.global_switch
            how = (switch.provenance() if switch is not None and switch.engaged
                   else "forced by [risk] kill_switch in the settings")  # fmt: skip
            out.append(Observation(
                NoticeKind.KILL_SWITCH, "kill_switch:global",
                f"kill switch ON for every account ({how})",
                "New entries are denied; exits still pass. `tradebridge resume` ends it.",
                fingerprint=how,
            ))  # fmt: skip
        for switch in found.engaged():
            if switch.account is None:
                continue
            out.append(Observation(
                NoticeKind.KILL_SWITCH, f"kill_switch:{switch.scope}",
                f"kill switch ON for {switch.account} ({switch.provenance()})",
                f"New entries of {switch.account} are denied; exits still pass.",
                fingerprint=switch.provenance(),
            ))  # fmt: skip
        return out

    async def _risk(self, risk: Any) -> list[Observation]:
        return [
            Observation(
                NoticeKind.RISK_LIMIT, f"risk_limit:{name}:{rule}",
                f"risk limit {rule} reached on {name}: its new entries are denied",
                standing.summary(),
            )
            for name, standing in sorted(risk.current.items())
            for rule in standing.reached
        ]  # fmt: skip

    async def _websockets(self, pool: BrokerPool) -> list[Observation]:
        from tradebridge.brokers.tradovate import TradovateBroker

        now = time.monotonic()
        out: list[Observation] = []
        current: set[int] = set()
        for broker in pool.built():
            if not isinstance(broker, TradovateBroker):
                continue
            for sync in broker.user_syncs():
                current.add(sync.user_id)
                if sync.synced.is_set():
                    self._ws_down.pop(sync.user_id, None)
                    continue
                since = self._ws_down.setdefault(sync.user_id, now)
                down_s = now - since
                if down_s >= self.config.websocket_down_s:
                    out.append(Observation(
                        NoticeKind.WEBSOCKET_DOWN, f"websocket:{sync.user_id}",
                        f"the user-sync WebSocket of Tradovate user {sync.user_id} "
                        f"({sync.account_name}) is down for {down_s:.0f} s",
                        "Fills and cancels reach the ledger only through reconcile meanwhile.",
                    ))  # fmt: skip
        for gone in set(self._ws_down) - current:
            del self._ws_down[gone]
        return out

    # --- rows -------------------------------------------------------------------------------

    async def _rows(self) -> None:
        cfg = self.config
        now = self._clock()
        horizon = timedelta(seconds=cfg.rows_window_s + cfg.catch_up_s)
        since = max(self._started - timedelta(seconds=cfg.catch_up_s), now - horizon)
        for kind in (NoticeKind.DENIED, NoticeKind.REJECTED):
            if not await self.ledger.verdicts_waiting(since, [kind.value]):
                continue
            if not await self.ledger.take_turn(f"rows:{kind.value}", kind.value,
                                               token=uuid.uuid4().hex,
                                               window_s=cfg.rows_window_s):  # fmt: skip
                continue
            rows = await self.ledger.claim_verdicts(since, [kind.value])
            if rows:
                lines = [
                    f"{r.signal_id}: {r.account_name} {r.side or ''} {_qty(r.quantity)} "
                    f"{r.instrument or ''} ({r.strategy_name or 'no strategy'}): "
                    f"{r.error_message or 'no reason given'}"
                    for r in rows
                ]
                self.sender.submit(self._rows_notice(kind, f"rows:{kind.value}", lines))
        corrections = await self.ledger.claim_reconciled(since)
        if corrections:
            lines = [
                f"{c.signal_id}: {c.account_name} {c.instrument or ''}: the ledger had it "
                f"{c.ledger_status or 'otherwise'}, the broker says "
                f"{c.broker_status or c.status}; now {c.status}"
                + (f" ({c.error_message})" if c.error_message else "")
                for c in corrections
            ]
            self.sender.submit(
                self._rows_notice(NoticeKind.RECONCILE_DIVERGENCE, "rows:reconciled", lines)
            )

    # --- messages ---------------------------------------------------------------------------

    def _condition_notice(self, found: Observation, phase: Phase, opened_at: datetime) -> Notice:
        title = f"tradebridge: {TITLES[found.kind]}"
        if phase is Phase.REMINDER:
            title += " (still on)"
        elif phase is Phase.CHANGED:
            title += " (changed)"
        since = f"On since {opened_at.isoformat(timespec='seconds')}."
        body = "\n".join(p for p in (found.summary, found.detail, since, self._tail(found.kind))
                         if p)  # fmt: skip
        return Notice(found.kind, found.key, phase, title, body)

    def _resolved_notice(
        self, key: str, kind: NoticeKind, summary: str, opened_at: datetime, ended: datetime
    ) -> Notice:
        lasted = _duration((ended - opened_at).total_seconds())
        body = (f"Resolved after {lasted}: {summary}\n"
                f"{self._footer}")  # fmt: skip
        return Notice(kind, key, Phase.RESOLVED, f"tradebridge: resolved: {TITLES[kind]}", body)

    def _rows_notice(self, kind: NoticeKind, key: str, lines: list[str]) -> Notice:
        listed = lines[:_ROWS_LISTED]
        if len(lines) > len(listed):
            listed.append(f"… and {len(lines) - len(listed)} more (tradebridge signals)")
        title = f"tradebridge: {len(lines)} {TITLES[kind]}"
        body = "\n".join([*listed, self._tail(kind)])
        return Notice(kind, key, Phase.ROWS, title, body)

    def _tail(self, kind: NoticeKind) -> str:
        return f"What to do: docs/notifications.md#{kind.value.replace('_', '-')}\n{self._footer}"


def _fingerprint(parts: Any) -> str:
    return hashlib.sha256("\n".join(sorted(str(p) for p in parts)).encode()).hexdigest()[:16]


def _qty(quantity: Any) -> str:
    if quantity is None:
        return ""
    return format(quantity.normalize(), "f") if hasattr(quantity, "normalize") else str(quantity)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def test_notice(settings: Settings) -> Notice:
    """Return the message of ``tradebridge notify test`` (no ledger needed)."""
    live = settings.tradovate.environment is Environment.LIVE
    return Notice(
        NoticeKind.TEST, "test", Phase.TEST, "tradebridge: test message",
        "If you read this, tradebridge can reach this channel.\n"
        f"{'LIVE' if live else 'demo'} · {socket.gethostname()}",
    )  # fmt: skip


async def send_test(settings: Settings, *, ledger: Ledger | None = None) -> list[SendRecord]:
    """Send a test message to every channel; return each channel's outcome."""
    sender = Sender(build_channels(settings.notify), settings.notify, ledger=ledger)
    try:
        return await sender.send_now(test_notice(settings))
    finally:
        sender.close()
