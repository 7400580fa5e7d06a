"""Each configured account's standing against its risk rules, for ``/healthz``, ``/metrics``
and the start-up banner (the day's P&L and the room left under each limit: docs/risk.md).

``RiskWatch.read`` asks the ledger once for every account (its open orders, the orders it
sent in its trading day, its balance marks: ``Ledger.risk_overview``) and judges them with
``pipeline/standing.py``; nothing is asked of the broker (the balance is the last one a
worker read, before an entry or after a fill, with its time). ``run`` reads again every
``interval_s`` so the metrics move without a scrape of ``/healthz``, and queues the flattens
the rules call for: at ``flatten_at`` each business day, and once a day when
``flatten_on_loss`` is set and the daily loss limit or the trailing drawdown is reached. Each
is a ``flatten`` row whose id names the account, the trading day and the cause, so every
worker sharing the database may queue it and only the first insert counts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime

from tradebridge._aio import reraise_if_cancelling
from tradebridge.config import Settings
from tradebridge.domain.clock import utcnow
from tradebridge.domain.contracts import is_business_day
from tradebridge.domain.sessions import in_flat_window, trading_day_start
from tradebridge.obs import metrics
from tradebridge.obs.logging import get_logger
from tradebridge.pipeline.risk import Rules, RulesBook
from tradebridge.pipeline.standing import Standing, standing
from tradebridge.runtime.health import Condition
from tradebridge.store.ledger import Ledger

_log = get_logger("tradebridge.runtime.risk_watch")
# Limits whose breach flattens the account under flatten_on_loss.
_LOSS_RULES = ("daily_loss_limit", "trailing_drawdown")


def _flat_time(now: datetime, rules: Rules) -> bool:
    """Return whether the account must be flat now: past ``flatten_at`` before the reset,
    on a day the exchange trades (any day with ``trading_hours = "always"``)."""
    assert rules.flatten_at is not None
    zone = rules.zone
    if not in_flat_window(now, zone, rules.flatten_at, rules.day_reset):
        return False
    return not rules.trading_hours or is_business_day(now.astimezone(zone).date())


class RiskWatch:
    """The configured accounts' standings as last read: ``current``."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        *,
        clock: Callable[[], datetime] = utcnow,
        interval_s: float = 5.0,
    ) -> None:
        self._ledger = ledger
        self._rules = RulesBook(settings)
        self._accounts = [a.name for a in settings.accounts]
        self._clock = clock
        self.interval_s = interval_s
        self.current: dict[str, Standing] = {}
        self.error: str | None = None  # why the last read failed (None once one succeeds)
        self._shown: set[tuple[str, str]] = set()

    async def read(self) -> dict[str, Standing]:
        """Read every account's standing now; publish it (``current``, the metrics)."""
        now = self._clock()
        rules = {name: self._rules.of(name, None) for name in self._accounts}
        found = await self._ledger.risk_overview(
            [(name, trading_day_start(now, r.zone, r.day_reset)) for name, r in rules.items()]
        )
        standings = {
            row.account_name: standing(
                row.account_name, rules[row.account_name], now, marks=row.marks,
                open_orders=row.open_orders, orders_today=row.orders_today,
            )
            for row in found
        }  # fmt: skip
        self._publish(standings)
        self.current, self.error = standings, None
        return standings

    def _publish(self, standings: dict[str, Standing]) -> None:
        shown: set[tuple[str, str]] = set()
        for name, found in standings.items():
            if found.day_pnl is None:
                with contextlib.suppress(KeyError):
                    metrics.RISK_DAY_PNL.remove(name)
            else:
                metrics.RISK_DAY_PNL.labels(account=name).set(float(found.day_pnl))
            for room in found.rooms:
                metrics.RISK_ROOM.labels(account=name, rule=room.rule).set(float(room.room))
                metrics.RISK_REACHED.labels(account=name, rule=room.rule).set(room.reached)
                shown.add((name, room.rule))
        for gone in self._shown - shown:  # a P&L rule without a reading in the new day
            for gauge in (metrics.RISK_ROOM, metrics.RISK_REACHED):
                with contextlib.suppress(KeyError):
                    gauge.remove(*gone)
        self._shown = shown

    async def run(self) -> None:
        """Read (and act) every ``interval_s`` until cancelled; a failed read keeps the last."""
        while True:
            try:
                await self.act(await self.read())
            except Exception as e:  # noqa: BLE001 - the watch outlives a database outage
                reraise_if_cancelling()
                if self.error is None:
                    _log.warning("risk_state_unreadable", error=type(e).__name__)
                self.error = type(e).__name__
            reraise_if_cancelling()  # a cancel lost inside the round (see _aio)
            await asyncio.sleep(self.interval_s)

    async def act(self, standings: dict[str, Standing]) -> list[tuple[str, str, str]]:
        """Queue the flattens due now; return those this call queued (id, account, cause)."""
        now = self._clock()
        due: list[tuple[str, str, str]] = []
        for name, found in standings.items():
            rules = self._rules.of(name, None)
            day = f"{found.trading_day:%Y%m%d}"
            if rules.flatten_at is not None and _flat_time(now, rules):
                due.append((f"risk-flat-{name}-{day}-at", name, "flatten_at"))
            lost = [r for r in found.reached if r in _LOSS_RULES]
            if rules.flatten_on_loss and lost:
                due.append((f"risk-flat-{name}-{day}-loss", name, lost[0]))
        queued = await self._ledger.queue_risk_flattens(due, {"by": "risk"})
        for signal_id, account, cause in queued:
            _log.warning("risk_flatten_queued", account=account, cause=cause,
                         signal_id=signal_id)  # fmt: skip
        return queued

    def summaries(self) -> dict[str, str]:
        """Return one line per account (the banner's and the start log's)."""
        return {name: found.summary() for name, found in self.current.items()}

    def condition(self) -> Callable[[], Awaitable[Condition]]:
        """Return the ``risk`` condition of ``/healthz``: every account's standing, degraded
        while a limit stops an account's entries (a human should know) or it cannot be read."""

        async def check() -> Condition:
            try:
                standings = await self.read()
            except Exception as e:  # noqa: BLE001 - shown as the condition's error
                reraise_if_cancelling()
                self.error = type(e).__name__
                standings = self.current
            detail: dict[str, object] = {
                "accounts": {name: found.as_json() for name, found in standings.items()}
            }
            stopped = {name: found.reached for name, found in standings.items() if found.reached}
            if stopped:
                detail["stopped"] = stopped
            if self.error is not None:
                detail["error"] = f"cannot read the risk state ({self.error}); last known shown"
            degraded = bool(stopped) or self.error is not None
            return Condition("degraded" if degraded else "ok", detail)

        return check
