"""Protective legs follow the position (DESIGN.md "Brackets follow the position").

Pure: given the orders of an account and the position that will remain on a contract once a
closing or reducing order has filled, return the cancels and modifies that leave no
protective leg larger than that remainder. The dispatcher runs them *before* the closing
order is sent, so at no moment can a leg open a position nobody asked for (the price of
this order: a market exit that the broker then rejects leaves the position with smaller legs,
or none; the row's history says so).

* A **protective leg** is an open bracket leg (an order with a parent) whose entry is no
  longer working. Legs of an entry that still works are suspended and follow their own
  entry, so they are left alone; except the legs of an order strategy, which exist only
  for what the entry has filled (a partly filled entry that still works has live legs).
* A bracket entry that still works but has **filled in part** is a group that covers what it
  has filled: its legs are suspended, and come alive for the entry's filled quantity when it
  ends (Tradovate: "bracket quantity follows the parent", unverified; the simulator does
  so). While the remainder covers all it has filled, the group is left alone (each further
  fill adds as much to the position as to its legs). Otherwise the entry's rest and its legs
  are cancelled, the legs first: a suspended leg cannot be resized (it takes the entry's
  filled quantity when it comes alive), and left alone it would come alive for more than
  remains and open the opposite position. Less protection, never a position.
* Before a **reduction** (``ending_entries``) such an entry ends first instead: its rest is
  cancelled, alone, so that its legs come alive for what it has filled, then they are fitted
  like any protective leg (from fresh reads) and keep protecting what remains. Only where
  that cannot open a position: the legs close the position, and every group (the live ones,
  what each filling entry has filled) covers no more than the position before the reduction.
  Otherwise, or when the entry cannot be ended, the cut above applies.
* The legs of one entry form a group: each of its stops is one-cancels-other with a target,
  at most one of a pair fills, so a group covers the larger of what its stops and what its
  targets still have open (one pair: the larger leg; a scale-out of several pairs: the sum).
* Legs that close the remaining position keep, newest entry first (positions pair fills
  first in, first out, so what remains is the newest), as much as remains; within a group the
  stops and the targets each keep that much, first leg first, and the rest are reduced (a
  modify to the new quantity) or cancelled. Legs on the other side (they would add to the
  remainder or, after a reversal, belong to the old position) are cancelled.
* A native order strategy (``strategy_id``) all of whose legs are cancelled is interrupted as
  well, first: a strategy that still runs may move or re-place its legs (a trailing stop, a
  break-even move). The legs are cancelled one by one all the same, and so is its entry if
  it still works (an interrupt that leaves them working must not leave a position nobody
  asked for).
* ``cancel_others`` (``[dispatcher] exit_cancels = "all"``; the dispatcher asks for it only
  when the position is closed or turned): every other order still alive on the contract is
  cancelled as well (resting entries and their suspended legs).
* Orders of earlier exits, target moves and reverses still resting (``resting_exits``) were
  sized from the position before: each is cut to what remains (a resting stop exit of 2 on
  a position reduced to 1 would open a short 1), or cancelled when nothing remains or it
  would add to what remains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tradebridge.domain.commands import CancelOrder, InterruptStrategy, ModifyOrder
from tradebridge.domain.enums import OrderType, Side
from tradebridge.domain.ids import BrokerOrderId
from tradebridge.domain.reports import OrderStatusReport


@dataclass(frozen=True, slots=True)
class LegFit:
    """What to do to the legs of one contract: cancels and modifies, safe to repeat."""

    cancels: tuple[CancelOrder, ...] = ()
    modifies: tuple[ModifyOrder, ...] = ()
    interrupts: tuple[InterruptStrategy, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.cancels or self.modifies or self.interrupts)


def _open_qty(order: OrderStatusReport) -> int:
    return max(order.quantity - order.filled_qty, 0)


def _age(order_id: BrokerOrderId) -> tuple[int, int | str]:
    # Tradovate ids grow; compare numerically where they are numbers.
    return (0, int(order_id)) if order_id.isdigit() else (1, order_id)


def protective_legs(orders: Sequence[OrderStatusReport], contract: str) -> list[OrderStatusReport]:
    """Return the live bracket legs on ``contract`` whose entry no longer works.

    An entry the broker no longer lists (an old one, out of the bridge's history) counts as
    done: its legs are treated as protective, the safe reading.
    """
    by_id = {o.broker_order_id: o for o in orders}
    legs = []
    for order in orders:
        if order.contract != contract or order.parent_id is None or order.status.is_terminal:
            continue
        parent = by_id.get(order.parent_id)
        if parent is not None and not parent.status.is_terminal and order.strategy_id is None:
            continue  # suspended: it follows its own entry, not the position
        legs.append(order)
    return legs


def _filling_entries(
    orders: Sequence[OrderStatusReport], contract: str
) -> dict[BrokerOrderId, tuple[OrderStatusReport, list[OrderStatusReport]]]:
    """Return the working bracket entries on ``contract`` that have filled in part, each with
    its suspended legs (an order strategy's legs are live: ``protective_legs`` has them)."""
    by_id = {o.broker_order_id: o for o in orders}
    entries: dict[BrokerOrderId, tuple[OrderStatusReport, list[OrderStatusReport]]] = {}
    for order in orders:
        if order.contract != contract or order.parent_id is None or order.status.is_terminal:
            continue
        parent = by_id.get(order.parent_id)
        if (
            parent is None
            or parent.status.is_terminal
            or parent.filled_qty <= 0
            or order.strategy_id is not None
        ):
            continue
        entries.setdefault(parent.broker_order_id, (parent, []))[1].append(order)
    return entries


def ending_entries(
    orders: Sequence[OrderStatusReport], contract: str, position: int, remaining: int
) -> tuple[CancelOrder, ...]:
    """Return the cancels that end, before a reduction of ``position`` to ``remaining``, the
    rest of each partly filled bracket entry whose legs ``fit_legs`` would cut.

    Ended, an entry's legs come alive for what it has filled (no more than ``position``:
    checked here, for all groups together) and ``fit_legs``, run again on fresh reads, cuts
    them to what remains instead of cancelling them. Nothing for a close or a turn (nothing
    remains to protect), nor where a group could then exceed the position.
    """
    if position == 0 or remaining * position <= 0 or abs(remaining) >= abs(position):
        return ()
    filling = _filling_entries(orders, contract)
    if not filling:
        return ()
    closing = Side.SELL if position > 0 else Side.BUY
    groups: dict[BrokerOrderId, list[OrderStatusReport]] = {}
    for leg in protective_legs(orders, contract):
        assert leg.parent_id is not None
        groups.setdefault(leg.parent_id, []).append(leg)
    covered = sum(group_covers(group) for group in groups.values())
    covered += sum(entry.filled_qty for entry, _ in filling.values())
    if covered > abs(position):
        return ()
    for entry, suspended in filling.values():
        if entry.side is closing or any(leg.side is not closing for leg in suspended):
            return ()
    cut = {c.broker_order_id for c in fit_legs(orders, contract, remaining).cancels}
    return tuple(
        CancelOrder(entry.account, entry.broker_order_id)
        for parent, (entry, _) in sorted(filling.items(), key=lambda item: _age(item[0]))
        if parent in cut
    )


def group_covers(group: Sequence[OrderStatusReport]) -> int:
    """Return how many contracts one entry's legs may still close (each stop is
    one-cancels-other with a target: the larger of the two kinds' open sums)."""
    stops = sum(_open_qty(leg) for leg in group if leg.order_type is not OrderType.LIMIT)
    return max(stops, sum(_open_qty(leg) for leg in group if leg.order_type is OrderType.LIMIT))


def fit_legs(
    orders: Sequence[OrderStatusReport],
    contract: str,
    remaining: int,
    *,
    cancel_others: bool = False,
    resting_exits: frozenset[str] = frozenset(),
) -> LegFit:
    """Return what leaves no protective leg on ``contract`` larger than ``remaining``.

    ``remaining`` is the signed position once the closing order has filled.
    ``resting_exits``: working orders of earlier exits, target moves and reverses (the
    ledger's), sized from a position this order changes: each is cut to what remains, or
    cancelled when nothing remains or it is on the side that would add to it (left
    working, one would later open a position). A resting reverse is cut like an exit.
    """
    legs = protective_legs(orders, contract)
    filling = _filling_entries(orders, contract)
    closing = Side.SELL if remaining > 0 else Side.BUY
    allowance = abs(remaining)
    groups: dict[BrokerOrderId, list[OrderStatusReport]] = {}
    for leg in legs:
        assert leg.parent_id is not None
        groups.setdefault(leg.parent_id, []).append(leg)
    for parent_id, (_, suspended) in filling.items():
        groups[parent_id] = suspended
    cancels: list[CancelOrder] = []
    modifies: list[ModifyOrder] = []
    entry_cancels: list[CancelOrder] = []
    for parent in sorted(groups, key=_age, reverse=True):
        group = sorted(groups[parent], key=lambda leg: _age(leg.broker_order_id))
        stops = [leg for leg in group if leg.order_type is not OrderType.LIMIT]
        targets = [leg for leg in group if leg.order_type is OrderType.LIMIT]
        covers = filling[parent][0].filled_qty if parent in filling else group_covers(group)
        keep = min(covers, allowance) if remaining != 0 else 0
        if any(leg.side is not closing for leg in group):
            keep = 0
        if parent in filling:
            if keep < covers:  # they would come alive for more than remains
                entry = filling[parent][0]
                cancels += [CancelOrder(leg.account, leg.broker_order_id) for leg in group]
                entry_cancels.append(CancelOrder(entry.account, entry.broker_order_id))
                keep = 0
            allowance -= keep
            continue
        allowance -= keep
        for kind in (stops, targets):
            left = keep
            for leg in kind:
                share = min(_open_qty(leg), left)
                left -= share
                if share == _open_qty(leg):
                    continue
                if share == 0 or not _restatable(leg):
                    cancels.append(CancelOrder(leg.account, leg.broker_order_id))
                else:
                    modifies.append(_resized(leg, share))
    cut = {c.broker_order_id for c in cancels}
    cancels += entry_cancels
    strategies = {leg.strategy_id for leg in legs if leg.strategy_id is not None}
    interrupts = tuple(
        InterruptStrategy(legs[0].account, strategy)
        for strategy in sorted(strategies)
        if all(leg.broker_order_id in cut for leg in legs if leg.strategy_id == strategy)
    )
    # An interrupted strategy's entry still working is cancelled too: in the simulator the
    # interrupt ends it, but the reference only names the endpoint, and an entry left
    # working would fill later without legs (or, were the interrupt refused, with new ones).
    stopped = {i.strategy_id for i in interrupts}
    cancels += [
        CancelOrder(o.account, o.broker_order_id)
        for o in orders
        if o.strategy_id in stopped and o.parent_id is None and not o.status.is_terminal
        and o.broker_order_id not in {c.broker_order_id for c in cancels}
    ]  # fmt: skip
    if cancel_others or resting_exits:
        cut = {c.broker_order_id for c in cancels} | {m.broker_order_id for m in modifies}
        kept = {leg.broker_order_id for leg in legs}
        kept |= {leg.broker_order_id for _, group in filling.values() for leg in group}
        for o in orders:
            if (
                o.contract != contract
                or o.status.is_terminal
                or o.broker_order_id in cut
                or o.broker_order_id in kept
            ):
                continue
            if o.broker_order_id in resting_exits and not cancel_others:
                if remaining != 0 and o.side is closing:  # it closes what remains: fit it
                    if _open_qty(o) > abs(remaining):
                        if _restatable(o):
                            modifies.append(_resized(o, abs(remaining)))
                        else:
                            cancels.append(CancelOrder(o.account, o.broker_order_id))
                    continue
                cancels.append(CancelOrder(o.account, o.broker_order_id))
            elif cancel_others:
                cancels.append(CancelOrder(o.account, o.broker_order_id))
    return LegFit(tuple(cancels), tuple(modifies), interrupts)


def _restatable(order: OrderStatusReport) -> bool:
    """Return whether a modify can restate ``order``'s type.

    A working order read as MARKET is of a type tradebridge does not place (reference §4.9:
    ``TrailingStop``, ``TrailingStopLimit``, ``MIT``; the native wire reads them as MARKET): a
    modify naming MARKET would turn it into a market order, which fills at once. One whose
    broker type is known is resized under that type (quantity alone); one whose type is not
    known is cancelled instead (less protection, never a position).
    """
    return order.order_type is not OrderType.MARKET or order.broker_order_type is not None


def _resized(order: OrderStatusReport, open_qty: int) -> ModifyOrder:
    """Return the modify that leaves ``order`` working for ``open_qty`` more."""
    return ModifyOrder(
        order.account,
        order.broker_order_id,
        quantity=order.filled_qty + open_qty,
        order_type=order.order_type,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        broker_order_type=order.broker_order_type,
    )
