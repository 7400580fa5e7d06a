"""Cutting the protective legs before an order that closes, reduces or turns a position.

The decision is ``pipeline/legs.py`` (pure); this module reads the broker, carries it out
and writes a ``legs_fitted`` event. The dispatcher runs it before the first send of a
``PlaceOrder`` with ``fit_legs`` (after risk, before the write-ahead), the placer again
before each resend of such a row, always from fresh reads: cancels and modifies of legs
carry absolute targets, so running it twice is harmless, and the closing order itself still
goes through the one submit/lookup path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tradebridge.brokers.base import Broker
from tradebridge.config import DispatcherConfig
from tradebridge.domain.commands import CancelOrder
from tradebridge.domain.ids import AccountName
from tradebridge.errors import BrokerRejected, InvalidInput, NotFound
from tradebridge.obs.logging import get_logger
from tradebridge.pipeline import legs
from tradebridge.pipeline.route import PlaceOrder
from tradebridge.store.ledger import Ledger

_log = get_logger("tradebridge.tracking.legs")


async def fit_legs(
    ledger: Ledger,
    config: DispatcherConfig,
    signal_id: str,
    plan: PlaceOrder,
    broker: Broker,
    *,
    fits: Callable[[int], bool] | None = None,
) -> int:
    """Cut the protective legs on the plan's contract to what the plan's order leaves; return
    the position on that contract as the broker shows it once they are cut.

    A leg the broker will not modify is cancelled instead (less protection, never a position
    nobody asked for); a cancel refused as too late (the leg filled, or went with its OCO
    partner) or of an order no longer there is noted. Once anything was cut the position is
    read again (a cut accepted may have met a fill too: an entry that filled more before its
    rest was cancelled). The caller compares what is returned with
    ``plan.position_before``: an exit sized for a position a leg has since closed would open
    one, one sized before an entry filled more would leave it unprotected
    (``PositionMoved``). Nothing is cut when the position read first no longer ``fits`` the
    plan (by default: differs from ``plan.position_before``): legs cut for an order that
    will not be sent as planned would leave what remains unprotected (the row is planned
    again, or not resent). Before a reduction, the partly filled bracket entries
    ``legs.ending_entries`` names are ended first and everything read again: their legs come
    alive, to be cut rather than lost. Raises ``BrokerError`` when a read or a call fails:
    the plan's order has not been sent then, and the caller tries again.
    """
    command = plan.command
    name = command.contract.name

    def moved(now: int) -> bool:
        if fits is None:
            return plan.position_before is not None and now != plan.position_before
        return not fits(now)

    position = await _position(broker, command.account, name)
    if moved(position):
        return position
    remaining = position + command.side.sign * command.quantity
    closes = position != 0 and remaining * position <= 0  # closed or turned
    orders = await broker.order_reports(command.account)
    ended: list[str] = []
    ends = legs.ending_entries(orders, name, position, remaining)
    if ends:
        # Their legs come alive for what they filled, then are cut like any (legs.py).
        ended = await _cancel_each(broker, ends)
        position = await _position(broker, command.account, name)
        if moved(position):
            # Filled more meanwhile: its legs came alive for that too, no more than the
            # position; the row is planned again and fits them then.
            detail: dict[str, Any] = {"position": position, "ended": ended}
            await ledger.add_event(signal_id, "legs_fitted", detail)
            _log.info("legs_fitted", signal_id=signal_id, **detail)
            return position
        remaining = position + command.side.sign * command.quantity
        orders = await broker.order_reports(command.account)
    # Earlier exits still resting were sized from the position this order changes.
    resting = await ledger.resting_exit_orders(command.account, besides=signal_id)
    fit = legs.fit_legs(
        orders, name, remaining, cancel_others=closes and config.exit_cancels == "all",
        resting_exits=resting,
    )  # fmt: skip
    if not fit and not ended:
        return position
    interrupted: list[str] = []
    for interrupt in fit.interrupts:
        try:
            await broker.interrupt_strategy(interrupt)
        except (BrokerRejected, NotFound, InvalidInput) as e:
            interrupted.append(f"{interrupt.strategy_id} ({_reason(e)})")
            continue
        interrupted.append(interrupt.strategy_id)
    cancels = list(fit.cancels)
    modified: list[dict[str, Any]] = []
    for modify in fit.modifies:
        try:
            await broker.modify(modify)
        except (BrokerRejected, NotFound) as e:
            _log.warning("leg_modify_refused", signal_id=signal_id,
                         broker_order_id=modify.broker_order_id, reason=_reason(e))  # fmt: skip
            cancels.append(CancelOrder(modify.account, modify.broker_order_id))
            continue
        modified.append({"order": modify.broker_order_id, "quantity": modify.quantity})
    cancelled = await _cancel_each(broker, cancels)
    detail = {"position": position, "remaining": remaining,
              "cancelled": cancelled, "modified": modified}  # fmt: skip
    if interrupted:
        detail["interrupted"] = interrupted
    if ended:
        detail["ended"] = ended
    # Read again once cut, whatever the answers said: a cut refused met a fill, and one
    # accepted may have met one too (a working entry that filled more before the rest of it
    # was cancelled, its legs gone first; a target filled in part before its cancel).
    position = await _position(broker, command.account, name)
    detail["position_after"] = position
    await ledger.add_event(signal_id, "legs_fitted", detail)
    _log.info("legs_fitted", signal_id=signal_id, **detail)
    return position


async def _cancel_each(broker: Broker, cancels: Sequence[CancelOrder]) -> list[str]:
    """Cancel each order; return their ids, a refused one (too late, gone) with its reason."""
    done: list[str] = []
    for cancel in cancels:
        try:
            await broker.cancel(cancel)
        except (BrokerRejected, NotFound) as e:
            done.append(f"{cancel.broker_order_id} ({_reason(e)})")
            continue
        done.append(cancel.broker_order_id)
    return done


class PositionMoved(Exception):
    """The position changed after the plan's order was sized from it."""

    def __init__(self, before: int | None, now: int) -> None:
        super().__init__(f"the position moved from {before} to {now} since the order was planned")
        self.before = before
        self.now = now


async def _position(broker: Broker, account: AccountName, contract: str) -> int:
    # From REST: the order reports read beside it are, and a socket's position may lag them.
    positions = await broker.position_reports(account, fresh=True)
    return sum(p.net_qty for p in positions if p.contract == contract)


def _reason(error: BrokerRejected | NotFound | InvalidInput) -> str:
    if isinstance(error, BrokerRejected):
        return error.reason
    return "NotFound" if isinstance(error, NotFound) else "InvalidInput"
