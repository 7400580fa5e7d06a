"""Sending a row's plan to the broker and resolving unknown outcomes; shared by the
dispatcher (inline) and reconcile (after a crash or a failed lookup).

The rules (DESIGN.md "Exactly-once effect", reference §11):

* the row is ``submitted`` (committed) before anything leaves; its plan is in that event's
  detail, so whoever resolves the row later knows exactly what was sent;
* accepted → ``working``; ``BrokerRejected`` → ``rejected``, and so is a 404 (``NotFound``:
  an unknown account id or route executes nothing and is never retried, §6.3); anything that
  may have been sent without a verdict → ``unknown`` (with when the submit stopped waiting:
  absence is concluded only once the lookup window has passed since then); an accepted answer naming
  an order another row already holds → ``needs_review`` (``_owned_elsewhere``);
* an ``unknown`` row is looked up (``Broker.lookup``: its client order id, else by shape with
  the baseline taken before the submit and the orders other rows own excluded); found →
  adopted; absent → resent with the SAME client order id, but only by whoever moves it
  ``unknown → submitted`` while its ``placement_attempts`` is still the one the lookup started
  from (two resolvers never both resend); a lookup that fails leaves it ``unknown`` for the
  next round;
* an order matched by shape only is not adopted while another row of the account that could
  have placed it is still in flight (``submitted``, ``unknown``, ``needs_review``: it owns
  nothing in the ledger yet): same contract and shape, the order not in that row's baseline,
  and that row's submit not older than the lookup window when this row's baseline was read
  (``baseline_after``, stored with the baseline, else the claim). That is ambiguity, like
  two candidates: the row waits (its rival's answer usually lands within a round), then
  escalates at the bound;
* the bound (``dispatcher.unknown_bound_s`` after the last submit): a lookup still ambiguous
  or failing past the bound escalates the row to ``needs_review`` with the evidence; an
  absence proven past the bound ends it ``failed`` (never a late send). ``needs_review`` rows
  are looked up again by reconcile and adopt what is provably theirs, never resent.

Cancel and flatten plans carry absolute targets, so resolving them means running them again,
within the bound counted from their first run and ``max_resends``; then ``needs_review``. A
flatten's rerun first reads the contract's position and working orders: flat and idle, it
is done (``filled``) and sends nothing; else it closes what is still held, never beside a
close that may still be working (``_left_to_flatten``).
An order that closes, reduces or turns the position (``PlaceOrder.fit_legs``) first cuts the
protective legs to what it leaves (``fit_legs``), before the first send and again before each
resend, from fresh reads: cancels and modifies of legs are safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tradebridge.brokers.base import Broker
from tradebridge.brokers.fence import fenced
from tradebridge.brokers.lookup import shape_mismatch
from tradebridge.brokers.pool import capture
from tradebridge.config import DispatcherConfig, Settings
from tradebridge.dispatch._legs import PositionMoved, fit_legs
from tradebridge.dispatch.liveness import LivenessLock, SendFence
from tradebridge.domain.calls import BrokerCall
from tradebridge.domain.commands import (
    Bracket,
    CancelOrder,
    FlattenPosition,
    SubmitOrder,
    Target,
)
from tradebridge.domain.contracts import parse_contract
from tradebridge.domain.enums import OrderStatus, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.lifecycle import SignalStatus
from tradebridge.domain.reports import LookupBaseline, LookupResult, OrderStatusReport
from tradebridge.errors import (
    AuthError,
    BrokerError,
    BrokerRejected,
    IllegalTransition,
    InvalidInput,
    KilledBeforeSend,
    Lockout,
    LookupAmbiguous,
    NotFound,
    OrderOwned,
    OutcomeUnknown,
    SendFenced,
)
from tradebridge.obs import metrics
from tradebridge.obs.logging import bind_order, get_logger
from tradebridge.pipeline.risk import reduces_only
from tradebridge.pipeline.route import CancelOrders, FlattenAccount, PlaceOrder, Plan
from tradebridge.store.ledger import HistoryEvent, Ledger, LedgerRow

_log = get_logger("tradebridge.tracking.placement")
# How far a worker's clock may be from the database's (baseline_after vs last_attempt_at).
_CLOCK_SLACK = timedelta(seconds=1)
# Namespace of the worker liveness locks (two-int form, apart from account locks 0x7462).
WORKER_LOCK_NAMESPACE = 0x7463

_FROM_BROKER: dict[OrderStatus, SignalStatus] = {
    OrderStatus.FILLED: SignalStatus.FILLED,
    OrderStatus.PARTIALLY_FILLED: SignalStatus.PARTIALLY_FILLED,
    OrderStatus.CANCELLED: SignalStatus.CANCELLED,
    OrderStatus.EXPIRED: SignalStatus.EXPIRED,
    OrderStatus.REJECTED: SignalStatus.REJECTED,
}


def ledger_status(status: OrderStatus) -> SignalStatus:
    """Return the row status of an order the broker reports (it exists: at least working)."""
    return _FROM_BROKER.get(status, SignalStatus.WORKING)


async def _submit_timed(broker: Broker, command: SubmitOrder) -> BrokerOrderId:
    """Submit, observing the ``answered`` step: from the send of a row's submit to the
    broker's answer, whatever it was (accepted, rejected, or lost: until we stopped waiting)."""
    started = time.perf_counter()
    try:
        return await broker.submit(command)
    finally:
        metrics.observe_step("answered", time.perf_counter() - started)


def _send_moments(calls: Sequence[BrokerCall]) -> dict[str, str]:
    """Return when a submit without a verdict last sent its order and when it stopped
    waiting for the answer (the ``unknown`` event's detail; worker clock).

    A request may leave long after the write-ahead (the request budget's wait, a p-ticket's
    p-time and resend inside the adapter) and, unanswered, may reach the broker until we
    stop waiting (a timeout): the lookup window counts from ``given_up_at``
    (``Placer._window_start``). ``sent_at`` (the last order request's send) is evidence.
    """
    moments = {"given_up_at": datetime.now(UTC).isoformat()}
    sent = [c.ts_sent for c in calls if c.method in ("POST", "DELETE") and c.ts_sent]
    if sent:
        moments["sent_at"] = max(sent).isoformat()
    return moments


def _not_sent(last: HistoryEvent | None) -> bool:
    """Return whether the row's last send was refused before execution (no usable token)."""
    return bool(
        last is not None
        and last.event == "unknown"
        and isinstance(last.detail, dict)
        and last.detail.get("not_sent")
    )


def _last_send(history: Sequence[HistoryEvent]) -> HistoryEvent | None:
    """Return the latest submit, resubmit or ``unknown`` event of a row's history."""
    for event in reversed(history):
        if event.event in ("unknown", "submitted", "resubmitted"):
            return event
    return None


def _parse_moment(value: Any) -> datetime | None:
    """Return an ISO time written by ``_send_moments`` (None: absent or unreadable)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- plans as JSON (the ``submitted`` event's detail) ---------------------------------------


def _num(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """Return the plan as JSON data, complete enough to send it again."""
    if isinstance(plan, PlaceOrder):
        c = plan.command
        bracket = c.bracket or Bracket()
        return {
            "plan": "order",
            "account": c.account,
            "contract": c.contract.name,
            "contract_year": c.contract.year,
            "side": c.side.value,
            "order_type": c.order_type.value,
            "quantity": c.quantity,
            "limit_price": _num(c.limit_price),
            "stop_price": _num(c.stop_price),
            "tif": c.tif.value,
            "stop_loss": _num(bracket.stop_loss),
            "take_profit": _num(bracket.take_profit),
            "leg_tif": None if bracket.time_in_force is None else bracket.time_in_force.value,
            "stop_loss_ticks": bracket.stop_loss_ticks,
            "take_profit_ticks": bracket.take_profit_ticks,
            "targets": [{"quantity": t.quantity, "ticks": t.ticks} for t in bracket.targets],
            "trailing": bracket.trailing,
            "breakeven": bracket.breakeven,
            "text": c.text,
            "client_order_id": c.client_order_id,
            "position_before": plan.position_before,
            "fit_legs": plan.fit_legs,
            **({"exact": True} if plan.exact else {}),
            **({"note": plan.note} if plan.note else {}),
        }
    if isinstance(plan, CancelOrders):
        return {
            "plan": "cancel",
            "account": plan.commands[0].account,
            "orders": [c.broker_order_id for c in plan.commands],
        }
    return {
        "plan": "flatten",
        "account": plan.commands[0].account,
        "contracts": [c.contract.name for c in plan.commands],
    }


def plan_from_json(data: dict[str, Any], today: date) -> Plan:
    """Rebuild a plan written by ``plan_to_json``."""
    account = AccountName(str(data["account"]))
    kind = data["plan"]
    if kind == "cancel":
        return CancelOrders(
            tuple(CancelOrder(account, BrokerOrderId(str(o))) for o in data["orders"])
        )
    if kind == "flatten":
        return FlattenAccount(
            tuple(FlattenPosition(account, parse_contract(n, today)) for n in data["contracts"])
        )
    contract = parse_contract(str(data["contract"]), today)
    if "contract_year" in data:
        contract = type(contract)(contract.root, int(data["contract_year"]), contract.month)
    sl, tp = _dec(data.get("stop_loss")), _dec(data.get("take_profit"))
    leg_tif = TimeInForce(data["leg_tif"]) if data.get("leg_tif") else None
    sl_ticks, tp_ticks = _int(data.get("stop_loss_ticks")), _int(data.get("take_profit_ticks"))
    targets = tuple(Target(int(t["quantity"]), int(t["ticks"])) for t in data.get("targets") or ())
    bracket = Bracket(
        stop_loss=sl, take_profit=tp, time_in_force=leg_tif, stop_loss_ticks=sl_ticks,
        take_profit_ticks=tp_ticks, targets=targets, trailing=bool(data.get("trailing")),
        breakeven=bool(data.get("breakeven")),
    )  # fmt: skip
    return PlaceOrder(
        SubmitOrder(
            client_order_id=ClientOrderId(str(data["client_order_id"])),
            account=account,
            contract=contract,
            side=Side(data["side"]),
            order_type=OrderType(data["order_type"]),
            quantity=int(data["quantity"]),
            limit_price=_dec(data.get("limit_price")),
            stop_price=_dec(data.get("stop_price")),
            tif=TimeInForce(data.get("tif") or "day"),
            bracket=bracket or None,
            text=str(data.get("text") or ""),
        ),
        position_before=data.get("position_before"),
        fit_legs=bool(data.get("fit_legs", False)),
        exact=bool(data.get("exact", False)),
    )


# --- sending ------------------------------------------------------------------------------


def still_fits(plan: PlaceOrder, position: int) -> bool:
    """Return whether the plan's order does to ``position`` what it was planned to do to
    ``plan.position_before``: reduce it by a quantity asked for without turning it (any
    position that still holds the order's quantity in the same direction); a target move,
    an exit of the whole position or a turn only on the same position (each is sized from
    it)."""
    before = plan.position_before
    if before is None or position == before:
        return True
    if plan.exact:
        return False  # sized from that very position (a target, an exit of all of it)
    command = plan.command
    planned = before + command.side.sign * command.quantity
    if planned * before < 0:
        return False  # it turns the position: sized from that very position
    return position * before > 0 and command.quantity <= abs(position)


async def _position_now(broker: Broker, command: SubmitOrder) -> int:
    """Return the net position on the command's contract, read from REST."""
    positions = await broker.position_reports(command.account, fresh=True)
    return sum(p.net_qty for p in positions if p.contract == command.contract.name)


async def _left_to_flatten(broker: Broker, command: FlattenPosition) -> bool:
    """Return whether a flatten whose last run's outcome is unknown has anything left to do
    on its contract: a position or a working order (both read now, the position from REST).

    That run may have closed the position (the broker acts on ``liquidateposition`` before
    its answer is lost): run again without a look, it would be sent again and again, every
    answer lost, for an account flat since the first run. A close is only sent again for a
    position still held, and never while a market order of the closing side still works
    there: it may be the lost run's own close, and a second one beside it could turn the
    position once both fill (raises ``OutcomeUnknown``: read again next round).
    """
    name = command.contract.name
    working = [o for o in await broker.order_reports(command.account)
               if o.contract == name and o.status.is_open]  # fmt: skip
    positions = await broker.position_reports(command.account, fresh=True)
    net = sum(p.net_qty for p in positions if p.contract == name)
    closing = [o.broker_order_id for o in working
               if net and o.order_type is OrderType.MARKET and o.side.sign * net < 0]  # fmt: skip
    if closing:
        raise OutcomeUnknown(
            f"a market order closing {name} still works ({', '.join(closing)}): "
            "no second close beside it; looked at again next round",
            client_order_id=f"flatten:{name}",
        )
    return net != 0 or bool(working)


def lookup_window_s(settings: Settings) -> float:
    """Return how long after a submit its order may still appear (the adapters' lookup window)."""
    bridge = settings.tvbridge.lookup_absent_after_s
    return max(settings.tradovate.lookup_absent_after_s, bridge if bridge is not None else 0.0)


# Other rows of an account still in flight, with the plan and the baseline of their latest
# submit: who else may own an order a lookup found by shape.


class Placer:
    """Sends plans and resolves unknown outcomes for rows of the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        config: DispatcherConfig,
        *,
        lookup_window_s: float = 10.0,
        liveness: LivenessLock | None = None,
    ) -> None:
        self.ledger = ledger
        self.config = config
        # How late an order may appear after its submit (``lookup_window_s(settings)``).
        self.lookup_window_s = lookup_window_s
        # The liveness lock of this process's worker: a resend is written as that worker's
        # claim and fenced by its lock (dispatch/liveness.py); None: a process without one.
        self.liveness = liveness

    async def _file_calls(
        self, signal_id: str, calls: Sequence[BrokerCall], keep: BrokerCall | None
    ) -> None:
        for call in calls:
            if call is not keep:
                await self.ledger.record_broker_call(call, signal_id)

    @staticmethod
    def _main_call(calls: Sequence[BrokerCall]) -> BrokerCall | None:
        posts = [c for c in calls if c.method in ("POST", "DELETE")]
        return posts[-1] if posts else (calls[-1] if calls else None)

    async def _outcome(
        self,
        signal_id: str,
        status: SignalStatus,
        calls: Sequence[BrokerCall],
        *,
        owner: str | None,
        event: str | None = None,
        detail: dict[str, Any] | None = None,
        **fields: Any,
    ) -> SignalStatus:
        """Write the outcome of a send (row + event + the send's audit); return the status."""
        main = self._main_call(calls)
        await self._file_calls(signal_id, calls, main)
        try:
            row = await self.ledger.transition(
                signal_id, status, expected=SignalStatus.SUBMITTED, owner=owner, event=event,
                detail=detail, broker_call=main, **fields,
            )  # fmt: skip
        except OrderOwned as e:
            # The row is still ours and ``submitted`` (the one-statement move matched it):
            # the answer names an order another row already holds. Not a late outcome.
            return await self._owned_elsewhere(signal_id, e, main, owner=owner, **fields)
        except IllegalTransition as e:
            # The tracker got there first (a fill overtook the answer) or reconcile took the
            # row over; the broker's truth is theirs to write. Keep the audit anyway.
            if main is not None:
                await self.ledger.record_broker_call(main, signal_id)
            await self.ledger.add_event(
                signal_id, "late_outcome", {"outcome": status.value, "note": str(e), **fields}
            )
            current = await self.ledger.get(signal_id)
            return current.status if current else status
        return row.status

    async def _owned_elsewhere(
        self,
        signal_id: str,
        error: OrderOwned,
        main: BrokerCall | None,
        *,
        owner: str | None,
        **fields: Any,
    ) -> SignalStatus:
        """Escalate a ``submitted`` row whose accepted answer names an order another row
        owns; return its status.

        The answer proves the order is this row's (its request, its client id): the other
        row took it by shape (``adopted_probable``, or a human's ``review adopt``), and its
        own order may never have been placed. Moving the order over would rewrite what that
        row already recorded (fills, the position it explains): a human decides, with both
        rows named. Left ``submitted``, the row would stall its account for good (nobody
        moves it: its worker is alive). ``submitted → unknown → needs_review`` in one
        transaction: never ``unknown`` in between, where a lookup that skips orders other
        rows own could find it absent and send it again.
        """
        order_id = fields.get("tradovate_order_id")
        evidence = {"broker_order_id": order_id, "owner": error.owner, "answer": "accepted"}
        message = (
            f"the broker accepted this row's order {order_id} (its own answer), but row "
            f"{error.owner} holds that order (adopted by shape?): decide whose it is; "
            f"{error.owner}'s own order may never have been placed"
        )
        try:
            async with self.ledger.transaction() as conn:
                await self.ledger.transition(
                    signal_id, SignalStatus.UNKNOWN, expected=SignalStatus.SUBMITTED,
                    owner=owner, event="order_owned", detail=evidence, broker_call=main,
                    conn=conn,
                )  # fmt: skip
                row = await self.ledger.transition(
                    signal_id, SignalStatus.NEEDS_REVIEW, expected=SignalStatus.UNKNOWN,
                    event="escalated", detail={"reason": "order_owned", **evidence},
                    error_message=f"needs review (order_owned): {message}"[:500], conn=conn,
                )  # fmt: skip
        except IllegalTransition as e:
            # Moved meanwhile after all: the late-outcome path, with the audit kept.
            if main is not None:
                await self.ledger.record_broker_call(main, signal_id)
            await self.ledger.add_event(
                signal_id, "late_outcome", {"outcome": "working", "note": str(e), **evidence}
            )
            current = await self.ledger.get(signal_id)
            return current.status if current else SignalStatus.FAILED
        if error.owner is not None:
            # The holder's history says its adoption is disputed, and by whom.
            await self.ledger.add_event(
                error.owner, "adoption_disputed", {"broker_order_id": order_id, "by": signal_id}
            )
        metrics.UNKNOWN_ESCALATIONS.labels(reason="order_owned").inc()
        _log.warning("row_needs_review", signal_id=signal_id, reason="order_owned", detail=message)
        return row.status

    async def send(
        self,
        signal_id: str,
        plan: Plan,
        broker: Broker,
        *,
        owner: str | None,
        fence: SendFence | None = None,
    ) -> SignalStatus:
        """Send the plan of a row already ``submitted``; write and return the outcome.

        ``fence``: the order leaves only while it lets it (dispatch/liveness.py); cancels and
        flattens carry absolute targets and are not fenced.
        """
        if isinstance(plan, PlaceOrder):
            return await self._send_order(signal_id, plan.command, broker, owner, fence)
        return await self._send_commands(signal_id, plan, broker, owner)

    async def _send_order(
        self,
        signal_id: str,
        command: SubmitOrder,
        broker: Broker,
        owner: str | None,
        fence: SendFence | None,
    ) -> SignalStatus:
        # The tracker holds this order's events until its outcome is written (Tracker.apply).
        with self.ledger.sending(str(command.client_order_id), str(command.account)):
            try:
                with fenced(fence):
                    return await self._submit(signal_id, command, broker, owner)
            except SendFenced as e:
                # Not sent, and the row is no longer ours to write: its recovery is under way.
                _log.warning("send_fenced", signal_id=signal_id, error=str(e))
                await self.ledger.add_event(signal_id, "send_fenced", {"note": str(e)[:300]})
                current = await self.ledger.get(signal_id)
                return current.status if current else SignalStatus.FAILED

    async def _submit(
        self, signal_id: str, command: SubmitOrder, broker: Broker, owner: str | None
    ) -> SignalStatus:
        with capture() as calls:
            try:
                order_id = await _submit_timed(broker, command)
            except BrokerRejected as e:
                reason = f"{e.reason}: {e.text}" if e.text else e.reason
                return await self._outcome(
                    signal_id, SignalStatus.REJECTED, calls, owner=owner,
                    error_message=f"rejected by the broker: {reason}",
                    detail={"reason": e.reason, "text": e.text},
                )  # fmt: skip
            except KilledBeforeSend as e:
                # Written ahead, then a kill switch stopped it before it left (the fence).
                return await self._outcome(
                    signal_id, SignalStatus.FAILED, calls, owner=owner,
                    error_message=str(e)[:500],
                    detail={"error": "KilledBeforeSend", "not_sent": True, "rule": "kill_switch"},
                )  # fmt: skip
            except NotFound as e:
                # 404: an unknown account id or route (reference §6.3 "do not retry", §10.1).
                # Nothing was executed; sending it again would meet the same 404.
                return await self._outcome(
                    signal_id, SignalStatus.REJECTED, calls, owner=owner,
                    error_message=f"not placed and not resent: {e}"[:500],
                    detail={"reason": "not_found", "text": str(e)[:300]},
                )  # fmt: skip
            except InvalidInput as e:
                # The adapter refused the command before sending (the broker never saw it).
                return await self._outcome(
                    signal_id, SignalStatus.FAILED, calls, owner=owner,
                    error_message=f"not sent: {e}", detail={"error": str(e)},
                )  # fmt: skip
            except (AuthError, Lockout) as e:
                # No usable token, or the user is locked out: refused before anything was
                # sent (a 401 answered to the order itself is an unknown outcome, looked up:
                # the adapters raise OutcomeUnknown). Nothing to look up: it is sent once a
                # token works, unless it got too old.
                return await self._outcome(
                    signal_id, SignalStatus.UNKNOWN, calls, owner=owner,
                    error_message=f"not sent, waiting for a usable token: {e}"[:500],
                    detail={"error": type(e).__name__, "not_sent": True},
                )  # fmt: skip
            except (OutcomeUnknown, BrokerError) as e:
                return await self._outcome(
                    signal_id, SignalStatus.UNKNOWN, calls, owner=owner,
                    error_message=f"outcome unknown, awaiting lookup: {e}",
                    detail={"error": type(e).__name__, **_send_moments(calls)},
                )  # fmt: skip
            except SendFenced:
                await self._file_calls(signal_id, calls, None)
                raise  # not sent; the caller reads where the row went
            except Exception as e:  # noqa: BLE001 - sent or not, we cannot tell: look it up
                _log.exception("submit_failed_unexpectedly", signal_id=signal_id)
                return await self._outcome(
                    signal_id, SignalStatus.UNKNOWN, calls, owner=owner,
                    error_message=f"outcome unknown after an unexpected error: {e!r}"[:500],
                    detail={"error": type(e).__name__, **_send_moments(calls)},
                )  # fmt: skip
        bind_order(broker_order_id=str(order_id))
        return await self._outcome(
            signal_id, SignalStatus.WORKING, calls, owner=owner, event="accepted",
            tradovate_order_id=str(order_id), detail={"broker_order_id": str(order_id)},
        )  # fmt: skip

    async def _send_commands(
        self,
        signal_id: str,
        plan: CancelOrders | FlattenAccount,
        broker: Broker,
        owner: str | None,
        *,
        rerun: bool = False,
    ) -> SignalStatus:
        """Send a cancel or flatten plan; ``rerun``: an earlier run's outcome is unknown, so
        each flatten first reads what is left (``_left_to_flatten``)."""
        done: list[str] = []
        with capture() as calls:
            try:
                if isinstance(plan, CancelOrders):
                    for cancel in plan.commands:
                        try:
                            await broker.cancel(cancel)
                        except BrokerRejected as e:
                            # Too late: it filled or was cancelled meanwhile; nothing works.
                            done.append(f"{cancel.broker_order_id} ({e.reason})")
                            continue
                        done.append(cancel.broker_order_id)
                else:
                    for flatten in plan.commands:
                        if rerun and not await _left_to_flatten(broker, flatten):
                            done.append(f"{flatten.contract.name} (already flat)")
                            continue
                        await broker.flatten(flatten)
                        done.append(flatten.contract.name)
            except BrokerRejected as e:
                return await self._outcome(
                    signal_id, SignalStatus.REJECTED, calls, owner=owner,
                    error_message=f"rejected by the broker: {e.reason}: {e.text}".rstrip(": "),
                    detail={"done": done},
                )  # fmt: skip
            except Exception as e:  # noqa: BLE001 - idempotent commands: reconcile reruns them
                return await self._outcome(
                    signal_id, SignalStatus.UNKNOWN, calls, owner=owner,
                    error_message=f"outcome unknown, will run again: {e}"[:500],
                    detail={"done": done, "error": type(e).__name__},
                )  # fmt: skip
        # Carried out: for cancel and flatten rows, ``filled`` means "done" (docs/dispatcher.md).
        return await self._outcome(
            signal_id, SignalStatus.FILLED, calls, owner=owner, event="done", detail={"done": done}
        )

    # --- unknown outcomes ------------------------------------------------------------------

    async def _sent_of(
        self, signal_id: str, today: date
    ) -> tuple[Plan | None, LookupBaseline | None]:
        """Return the plan a row was sent with and the baseline of its latest submit."""
        plan: Plan | None = None
        baseline: LookupBaseline | None = None
        found_baseline = False
        for event, detail in await self.ledger.submit_details(signal_id):
            if not isinstance(detail, dict):
                continue
            if not found_baseline and "baseline" in detail:
                baseline, found_baseline = LookupBaseline.from_json(detail["baseline"]), True
            if plan is None and event == "submitted" and "plan" in detail:
                plan = plan_from_json(detail, today)
        return plan, baseline

    async def resolve(self, signal_id: str, broker: Broker, *, today: date) -> SignalStatus:
        """Resolve an ``unknown`` row: look it up, adopt what exists, resend what is absent."""
        plan, baseline = await self._sent_of(signal_id, today)
        if plan is None:
            # It may have been sent: never 'failed' (no order rests) on a guess; a human decides.
            return await self.escalate(
                signal_id, "no_plan",
                "no plan recorded for this unknown row; check the broker by hand", {},
            )  # fmt: skip
        cfg = self.config
        delay = cfg.lookup_backoff_s
        for _ in range(cfg.lookup_attempts):
            row = await self.ledger.get(signal_id)
            if row is None or row.status is not SignalStatus.UNKNOWN:
                return row.status if row else SignalStatus.FAILED
            if not isinstance(plan, PlaceOrder):
                # Cancels and flattens carry absolute targets: running them again is safe,
                # within the bound and max_resends, like orders.
                stop = await self._rerun_refused(signal_id, plan, row)
                if stop is not None:
                    return stop
                if not await self._claim_resend(signal_id, row.placement_attempts):
                    continue
                status = await self._send_commands(signal_id, plan, broker, None, rerun=True)
            else:
                status = await self._lookup_once(signal_id, plan, broker, row, baseline)
            if status is not SignalStatus.UNKNOWN:
                return status
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.05), cfg.lookup_backoff_max_s)
        return SignalStatus.UNKNOWN

    async def _rerun_refused(
        self, signal_id: str, plan: CancelOrders | FlattenAccount, row: LedgerRow
    ) -> SignalStatus | None:
        """Escalate an unknown cancel or flatten that may not run again; None: it may.

        Past ``unknown_bound_s`` since its FIRST run (each rerun refreshes
        ``last_attempt_at``, from which its account's hold counts: counted from there, a
        command that fails without a verdict every time would hold the account's exits for
        good), or after ``max_resends`` reruns. What it did is unknown (some of its cancels
        may have gone through): ``needs_review``, never ``failed``, and it holds nothing back.
        """
        runs = row.placement_attempts
        kind = "cancel" if isinstance(plan, CancelOrders) else "flatten"
        if self.past_bound(row, since=row.ts_submitted or row.created_at):
            why = (
                f"still unknown after {runs} run(s), older than dispatcher.unknown_bound_s "
                f"({self.config.unknown_bound_s:g}s) since its first"
            )
        elif runs > self.config.max_resends:
            why = f"still unknown after {runs} runs (dispatcher.max_resends)"
        else:
            return None
        message = (
            f"{kind} {why}: not run again; last error: {row.error_message or 'none'}; "
            "check the account at the broker and run it by hand if it is still wanted"
        )
        return await self.escalate(signal_id, "rerun_failing", message, {"runs": runs})

    def past_bound(self, row: LedgerRow, *, since: datetime | None = None) -> bool:
        """Return whether an unresolved row has held its account longer than the bound
        (counted from its last submit, or from ``since``)."""
        since = since or row.last_attempt_at or row.updated_at
        if since is None:
            return False
        age = (datetime.now(UTC) - since).total_seconds()
        return age > self.config.unknown_bound_s

    async def _lookup_once(
        self,
        signal_id: str,
        plan: PlaceOrder,
        broker: Broker,
        row: LedgerRow,
        baseline: LookupBaseline | None,
    ) -> SignalStatus:
        command = plan.command
        history = await self.ledger.history(signal_id)
        last = _last_send(history)
        if _not_sent(last):
            return await self._send_absent(signal_id, plan, broker, row, looked_up=False)
        start = self._window_start(row, last)
        with capture() as calls:
            try:
                result = await self._look(signal_id, command, broker, row, baseline, start)
            except LookupAmbiguous as e:
                # Never guessed. It may clear up (another row adopts its own order), so the row
                # stays unknown until the bound, then a human decides.
                await self._file_calls(signal_id, calls, None)
                evidence = {"candidates": list(e.candidates), "evidence": list(e.evidence)[:50]}
                await self.ledger.add_event(signal_id, "lookup_ambiguous", evidence)
                if self.past_bound(row):
                    return await self.escalate(signal_id, "ambiguous", str(e), evidence)
                return SignalStatus.UNKNOWN
            except Exception as e:  # noqa: BLE001 - a failed lookup is retried later
                await self._file_calls(signal_id, calls, None)
                await self.ledger.add_event(signal_id, "lookup_failed", {"error": str(e)[:300]})
                if self.past_bound(row):
                    return await self.escalate(
                        signal_id, "lookup_failing",
                        f"lookups keep failing ({type(e).__name__}: {e})"[:300],
                        {"error": str(e)[:300]},
                    )  # fmt: skip
                return SignalStatus.UNKNOWN
        await self._file_calls(signal_id, calls, None)
        await self.ledger.add_event(signal_id, "lookup", {
            "result": "absent" if result.found is None else (
                "probable" if result.probable else "found"),
            "broker_order_id": None if result.found is None else result.found.broker_order_id,
            "evidence": list(result.evidence)[:50],
            **({"window_from": start.isoformat()} if start is not None else {}),
        })  # fmt: skip
        if result.found is not None:
            rivals = (
                await self._rivals(signal_id, command, result.found, row) if result.probable else []
            )
            if rivals:
                evidence = {"candidates": [result.found.broker_order_id], "rivals": rivals}
                await self.ledger.add_event(signal_id, "lookup_ambiguous", evidence)
                if self.past_bound(row):
                    message = (
                        f"order {result.found.broker_order_id} matches by shape, and rows still "
                        f"in flight may have placed it: {', '.join(rivals[:5])}"
                    )
                    return await self.escalate(signal_id, "ambiguous", message, evidence)
                return SignalStatus.UNKNOWN
            return await self._adopt(signal_id, result.found, probable=result.probable)
        refused = sum(1 for event in history if _not_sent(event))
        return await self._send_absent(
            signal_id, plan, broker, row, looked_up=True, refused=refused
        )

    async def _last_send_event(self, signal_id: str) -> HistoryEvent | None:
        """Return the row's latest submit, resubmit or ``unknown`` event."""
        return _last_send(await self.ledger.history(signal_id))

    @staticmethod
    def _window_start(row: LedgerRow, last: HistoryEvent | None) -> datetime | None:
        """Return when the lookup window of the row's latest submit starts.

        The latest of its write-ahead (``last_attempt_at``) and the moment its sender stopped
        waiting for the answer, recorded with the ``unknown`` outcome (``_send_moments``): its
        request may have left, and reached the broker, long after the write-ahead. A row
        whose sender died wrote no outcome: the write-ahead is all there is, and the fence
        bounds how late that worker's request can leave (dispatch/liveness.py).
        """
        moments = [row.last_attempt_at] if row.last_attempt_at is not None else []
        if last is not None and last.event == "unknown" and isinstance(last.detail, dict):
            given_up = _parse_moment(last.detail.get("given_up_at"))
            if given_up is not None:
                moments.append(given_up)
        return max(moments, default=None)

    async def _look(
        self,
        signal_id: str,
        command: SubmitOrder,
        broker: Broker,
        row: LedgerRow,
        baseline: LookupBaseline | None,
        start: datetime | None,
    ) -> LookupResult:
        """Look the row's latest submit up; absent only once the window since ``start`` passed.

        The adapters wait out the window from the write-ahead (``ts_sent``, which also tells
        orders created before the submit from ours); where the request left later, absence
        is looked at again once the window has passed since then (at most one window on,
        should the sender's clock run ahead).
        """
        sent = row.last_attempt_at or datetime.now(UTC)
        exclude = await self.ledger.owned_orders(command.account, besides=signal_id)
        result = await broker.lookup(command, sent, baseline=baseline, exclude=exclude)
        if result.found is not None or start is None:
            return result
        wait = self.lookup_window_s - (datetime.now(UTC) - start).total_seconds()
        if wait <= 0:
            return result
        await asyncio.sleep(min(wait, self.lookup_window_s + _CLOCK_SLACK.total_seconds()))
        exclude = await self.ledger.owned_orders(command.account, besides=signal_id)
        return await broker.lookup(command, sent, baseline=baseline, exclude=exclude)

    async def _send_absent(
        self,
        signal_id: str,
        plan: PlaceOrder,
        broker: Broker,
        row: LedgerRow,
        *,
        looked_up: bool,
        refused: int = 0,
    ) -> SignalStatus:
        """Send again the order of a row proved absent (a lookup) or never sent (no token).

        ``refused``: the row's sends refused before they left (no usable token): each moved
        the row to ``submitted`` (counted in ``placement_attempts``), none was a send.
        """
        command = plan.command
        version = row.placement_attempts
        sends = version - refused
        # A row never sent is as old as its first submit (each try refreshes last_attempt_at).
        first = None if looked_up else row.ts_submitted or row.created_at
        if self.past_bound(row, since=first):
            how = (
                f"the broker has no such order (looked up after {version} submit(s))"
                if looked_up
                else "it was never sent (no usable token)"
            )
            return await self._fail_unknown(
                signal_id,
                f"not placed: {how}; it is older than dispatcher.unknown_bound_s "
                f"({self.config.unknown_bound_s:g}s), so it is not sent late",
            )
        # A send refused for want of a token is no resend: it does not count.
        if looked_up and sends > self.config.max_resends:
            return await self._fail_unknown(
                signal_id,
                f"lookup proved the order absent after {sends} submits; not resent "
                "again (dispatcher.max_resends)",
            )
        position = plan.position_before
        try:
            if plan.fit_legs:
                # The legs were cut before the first send; the picture may have changed.
                with capture() as fit_calls:
                    try:
                        seen = await fit_legs(
                            self.ledger, self.config, signal_id, plan, broker,
                            fits=functools.partial(still_fits, plan),
                        )  # fmt: skip
                    finally:
                        await self._file_calls(signal_id, fit_calls, None)
                position = seen
                if not still_fits(plan, seen):
                    # Sized from a position that has changed since (a leg filled): sent
                    # again, it would open one nobody asked for.
                    moved = PositionMoved(plan.position_before, seen)
                    return await self._fail_unknown(
                        signal_id, f"not placed, and not sent again: {moved}"
                    )
            elif plan.exact:
                # Its risk checks judged it on the position then (a plain order under
                # position rules): sent again only on that very position.
                with capture() as read_calls:
                    try:
                        position = await _position_now(broker, command)
                    finally:
                        await self._file_calls(signal_id, read_calls, None)
                if position != plan.position_before:
                    moved = PositionMoved(plan.position_before, position)
                    return await self._fail_unknown(
                        signal_id,
                        f"not placed, and not sent again: {moved}, and its risk checks "
                        "were of that position",
                    )
            begun = datetime.now(UTC)
            new_baseline = await broker.lookup_baseline(command)
        except Exception as e:  # noqa: BLE001 - nothing sent: look again next round
            await self.ledger.add_event(signal_id, "lookup_failed", {"error": str(e)[:300]})
            return SignalStatus.UNKNOWN
        fence = None
        if self.liveness is not None:
            # A resend is a new order at the broker: a kill switch thrown since stops it
            # unless it only reduces the position (judged by the process's switches).
            opens = not reduces_only(command, position)
            fence = self.liveness.fence(signal_id, account=command.account, opens=opens)
        if not await self._claim_resend(signal_id, version, new_baseline, begun):
            current = await self.ledger.get(signal_id)
            return current.status if current else SignalStatus.FAILED
        if fence is not None:
            fence.written(version + 1)
        return await self._send_order(signal_id, command, broker, None, fence)

    async def _fail_unknown(self, signal_id: str, message: str) -> SignalStatus:
        try:
            row = await self.ledger.transition(
                signal_id, SignalStatus.FAILED, expected=SignalStatus.UNKNOWN, error_message=message
            )
        except IllegalTransition:
            current = await self.ledger.get(signal_id)
            return current.status if current else SignalStatus.FAILED
        return row.status

    async def escalate(
        self, signal_id: str, reason: str, message: str, evidence: dict[str, Any]
    ) -> SignalStatus:
        """Move an ``unknown`` row to ``needs_review`` with the evidence; log and count it."""
        try:
            row = await self.ledger.transition(
                signal_id, SignalStatus.NEEDS_REVIEW, expected=SignalStatus.UNKNOWN,
                event="escalated", detail={"reason": reason, **evidence},
                error_message=f"needs review ({reason}): {message}"[:500],
            )  # fmt: skip
        except IllegalTransition:
            current = await self.ledger.get(signal_id)
            return current.status if current else SignalStatus.FAILED
        metrics.UNKNOWN_ESCALATIONS.labels(reason=reason).inc()
        _log.warning("row_needs_review", signal_id=signal_id, reason=reason, detail=message)
        return row.status

    async def review(self, signal_id: str, broker: Broker, *, today: date) -> SignalStatus:
        """Look a ``needs_review`` row up again; adopt what is now provably its own.

        Its client id, or the one order the lookup's rules leave (an ambiguity that cleared
        up once the other rows adopted theirs). Never resent: absence keeps it for review,
        unless it was escalated only because no lookup could run (``lookup_failing``: no
        usable token, the broker unreachable): then the question was never in doubt, only
        unasked, and a proven absence fails it, as a lookup within the bound would have.
        """
        plan, baseline = await self._sent_of(signal_id, today)
        row = await self.ledger.get(signal_id)
        if (
            row is None
            or row.status is not SignalStatus.NEEDS_REVIEW
            or not isinstance(plan, PlaceOrder)
        ):
            return row.status if row else SignalStatus.FAILED
        # Absence decides something only for a row escalated for want of lookups: only then
        # wait out the window since its submit was last out.
        reason = await self._escalated_for(signal_id)
        start = (
            self._window_start(row, await self._last_send_event(signal_id))
            if reason == "lookup_failing"
            else None
        )
        with capture() as calls:
            try:
                result = await self._look(signal_id, plan.command, broker, row, baseline, start)
            except Exception:  # noqa: BLE001 - still ambiguous or unreachable: a human decides
                return SignalStatus.NEEDS_REVIEW
            finally:
                await self._file_calls(signal_id, calls, None)
        if result.found is None and reason == "lookup_failing":
            try:
                failed = await self.ledger.transition(
                    signal_id, SignalStatus.FAILED, expected=SignalStatus.NEEDS_REVIEW,
                    error_message=(
                        "not placed: the broker has no such order (looked up once lookups "
                        "worked again); it is older than dispatcher.unknown_bound_s "
                        f"({self.config.unknown_bound_s:g}s), so it is not sent late"
                    ),
                )  # fmt: skip
            except IllegalTransition:
                current = await self.ledger.get(signal_id)
                return current.status if current else SignalStatus.FAILED
            return failed.status
        if result.found is None or (
            result.probable and await self._rivals(signal_id, plan.command, result.found, row)
        ):
            return SignalStatus.NEEDS_REVIEW
        # Found, or now the one order that can be ours (the others' rows adopted theirs).
        return await self._adopt(
            signal_id, result.found, probable=result.probable, expected=SignalStatus.NEEDS_REVIEW
        )

    async def _escalated_for(self, signal_id: str) -> str | None:
        """Return the reason of the row's last escalation (``escalate``), if any."""
        for event in reversed(await self.ledger.history(signal_id)):
            if event.event == "escalated" and isinstance(event.detail, dict):
                reason = event.detail.get("reason")
                return str(reason) if reason is not None else None
        return None

    async def _rivals(
        self, signal_id: str, command: SubmitOrder, found: OrderStatusReport, row: LedgerRow
    ) -> list[str]:
        """Return the account's other rows in flight that may have placed ``found``.

        For a match by shape (a client id is proof). A rival asked for the same contract,
        shape and bracket, ``found`` is not in the baseline of its latest submit, and that
        submit is not older than the lookup window when this row's baseline was read
        (``found`` is newer than that baseline; an order of the rival's would have appeared
        within the window, before it). The submit's age counts from when its request was
        last out (``_window_start``); a rival still ``submitted`` may not have sent it yet
        (the request budget's wait, a p-ticket's): whatever its age, it is a rival.
        """
        read_after = await self._baseline_read_after(signal_id, row)
        rivals: list[str] = []
        for other in await self.ledger.sent_rows_besides(command.account, signal_id):
            sent = other["last_attempt_at"]
            given_up = _parse_moment(other["given_up_at"])
            if given_up is not None and (sent is None or given_up > sent):
                sent = given_up
            if (
                read_after is not None
                and sent is not None
                and other["status"] != SignalStatus.SUBMITTED.value
                and (read_after - sent).total_seconds() > self.lookup_window_s
            ):
                continue
            baseline = LookupBaseline.from_json(other["baseline"])
            if baseline is not None and baseline.existed_before(str(found.broker_order_id)):
                continue
            detail = other["plan"]
            if isinstance(detail, dict) and detail.get("plan") == "flatten":
                # A bridge flatten may close by a market order of its own.
                if found.order_type is OrderType.MARKET:
                    rivals.append(str(other["signal_id"]))
                continue
            if not isinstance(detail, dict) or detail.get("plan") != "order":
                continue
            theirs = plan_from_json(detail, datetime.now(UTC).date())
            assert isinstance(theirs, PlaceOrder)
            wanted = command.bracket or Bracket()
            if (
                theirs.command.contract != command.contract
                or shape_mismatch(found, theirs.command) is not None
                or (wanted and (theirs.command.bracket or Bracket()) != wanted)
            ):
                continue
            rivals.append(str(other["signal_id"]))
        return rivals

    async def _baseline_read_after(self, signal_id: str, row: LedgerRow) -> datetime | None:
        """Return a time before which the row's latest baseline was surely not read.

        ``baseline_after`` (the worker's clock, stored with the baseline; less the clock slack
        allowed between a worker and the database), else the claim: rows claimed in one batch
        read their baselines one after the other, long after it.
        """
        value = await self.ledger.latest_baseline_after(signal_id)
        bounds = [row.ts_claimed] if row.ts_claimed is not None else []
        if value:
            with contextlib.suppress(ValueError):
                bounds.append(datetime.fromisoformat(value) - _CLOCK_SLACK)
        return max(bounds, default=None)

    async def _adopt(
        self,
        signal_id: str,
        report: OrderStatusReport,
        *,
        probable: bool,
        expected: SignalStatus = SignalStatus.UNKNOWN,
    ) -> SignalStatus:
        status = ledger_status(report.status)
        bind_order(broker_order_id=str(report.broker_order_id))
        detail = {"broker_order_id": report.broker_order_id, "probable": probable}
        if probable:
            # Matched by shape where nothing else can own it, not by our id: a human may look.
            detail["review"] = True
        try:
            row = await self.ledger.transition(
                signal_id, status, expected=expected,
                event="adopted_probable" if probable else "adopted", detail=detail,
                tradovate_order_id=str(report.broker_order_id),
                filled_qty=report.filled_qty or None, avg_fill_price=report.avg_fill_price,
                error_message=(
                    f"adopted broker order {report.broker_order_id} matched by shape; review"
                    if probable else None
                ),
            )  # fmt: skip
        except OrderOwned as e:
            if expected is not SignalStatus.UNKNOWN:
                return expected
            evidence = {"broker_order_id": report.broker_order_id, "owner": e.owner}
            if probable:
                # Matched by shape, and the other row recorded that order after our list of
                # owned orders was read: it was never ours. Look again (it is excluded then;
                # the bound applies to what that lookup finds).
                await self.ledger.add_event(signal_id, "lookup_ambiguous", evidence)
                return SignalStatus.UNKNOWN
            return await self.escalate(signal_id, "order_owned", str(e), evidence)
        except IllegalTransition:
            current = await self.ledger.get(signal_id)
            return current.status if current else SignalStatus.FAILED
        return row.status

    async def _claim_resend(
        self,
        signal_id: str,
        version: int,
        baseline: LookupBaseline | None = None,
        baseline_after: datetime | None = None,
    ) -> bool:
        """Move ``unknown → submitted`` if nobody sent since ``version``; return whether done.

        The row becomes this process's worker's claim, if it has one: its liveness lock then
        says the resend's request may still be on its way.
        """
        detail: dict[str, Any] = {"after_attempts": version}
        if baseline is not None:
            detail["baseline"] = baseline.to_json()
            if baseline_after is not None:
                detail["baseline_after"] = baseline_after.isoformat()
        worker = None if self.liveness is None else self.liveness.worker_id
        return await self.ledger.claim_resend(signal_id, version, detail, worker=worker)
