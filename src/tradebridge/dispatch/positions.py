"""The position check: does the broker hold what tradebridge's own orders explain?

Every ``dispatcher.position_check_s`` one worker (``Ledger.take_position_turns``) checks each
account that is quiet (no row in flight, none moved for ``dispatcher.position_settle_s``):

* ``ours``: the signed fills of tradebridge's orders per contract (``Ledger.our_positions``);
* ``broker``: the account's net positions, read between two reads of ``ours`` (a fill landing
  meanwhile makes the two differ, and the check waits for the next turn);
* ``accepted``: what the account holds besides tradebridge, per contract: at the account's
  first check, whatever it held; after a flatten sent by a row, whatever is left; after an
  operator's ``tradebridge positions-accept``, what the last check read. A contract first
  seen later starts from nothing held besides.

``broker - ours - accepted`` is what nobody explains: a trade by hand or by another tool, a
fill that never reached the ledger, a liquidation by the broker. Seen twice in a row with
the same value it becomes a divergence (``diverged_since``), which the notifier announces
(``reconcile_divergence``, docs/notifications.md) until a check finds it explained again
or an operator accepts it. Nothing is ever sent to the broker because of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from tradebridge.domain.clock import utcnow
from tradebridge.store.ledger import PositionCheck


def judge(
    account: str,
    stored: Mapping[str, PositionCheck],
    broker: Mapping[str, Decimal],
    ours: Mapping[str, Decimal],
    *,
    baselined: bool,
    flattened: bool,
    now: datetime | None = None,
) -> list[PositionCheck]:
    """Return the account's checks after one look (pure).

    ``stored`` is what the previous checks left, by contract; ``flattened`` says a flatten
    was sent since then (its effect is accepted, not judged).
    """
    now = now or utcnow()
    out: list[PositionCheck] = []
    for contract in sorted(set(stored) | set(broker) | set(ours)):
        net, mine = broker.get(contract, Decimal(0)), ours.get(contract, Decimal(0))
        before = stored.get(contract)
        if before is None or flattened:
            why = "baseline" if not baselined else ("flatten" if flattened else "new")
            # A contract first seen after the baseline: nothing was held in it besides.
            accepted = net - mine if why != "new" else Decimal(0)
            fresh = PositionCheck(account, contract, accepted, net, mine, now, now, why)
            out.append(_suspect(fresh, None, now))
            continue
        out.append(_suspect(replace(before, broker_net=net, ours=mine, checked_at=now),
                            before, now))  # fmt: skip
    return out


def unexplained(
    stored: Mapping[str, PositionCheck], broker: Mapping[str, Decimal], ours: Mapping[str, Decimal]
) -> bool:
    """Return whether any contract's position is not what ``stored`` accepted plus ours (a
    contract never stored counts from nothing held besides, once any was stored)."""
    if not stored:
        return False  # the account's first check: whatever it holds is accepted
    zero = Decimal(0)
    return any(
        broker.get(c, zero) - ours.get(c, zero) != (stored[c].accepted if c in stored else zero)
        for c in set(stored) | set(broker) | set(ours)
    )


def _suspect(check: PositionCheck, before: PositionCheck | None, now: datetime) -> PositionCheck:
    """Return ``check`` with its divergence: none, suspected (seen once) or confirmed."""
    moved = check.unexplained
    if moved == 0:
        return replace(check, diverged_since=None, divergence=None)
    seen = before.divergence if before is not None and before.divergence else None
    detail = {"unexplained": str(moved), "broker_net": str(check.broker_net),
              "ours": str(check.ours), "accepted": str(check.accepted)}  # fmt: skip
    if seen is None or Decimal(seen["unexplained"]) != moved:
        # First seen (or changed): wait for one more check before telling anybody, unless
        # it had diverged already (then it stays diverged, with its new size).
        since = before.diverged_since if before is not None else None
        return replace(check, diverged_since=since, divergence={**detail, "seen": 1})
    return replace(
        check,
        diverged_since=(before.diverged_since if before is not None and before.diverged_since
                        else now),
        divergence={**detail, "seen": int(seen.get("seen", 1)) + 1},
    )  # fmt: skip
