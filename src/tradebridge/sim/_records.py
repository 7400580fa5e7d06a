"""The record of what happened: ids, orders and their versions, commands, execution reports
and fills, each published to the subscribers (the WebSocket's user sync) as it is made.

Ids come from one counter per entity type (orders from 1_000_001, versions from 2_000_001,
...), shifted by ``id_offset``. Subscribers get a copy of each entity as it was at that
change; one that raises is logged and skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import structlog

from tradebridge.sim._reference import Reference
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.model import (
    Entity,
    EntityChange,
    SimCashBalance,
    SimCommand,
    SimExecutionReport,
    SimFill,
    SimOrder,
    SimOrderStrategy,
    SimOrderVersion,
    SimPosition,
    Subscriber,
)

log = structlog.get_logger(__name__)

# Where each entity type's ids start, so that ids look like a broker's and differ by type.
_ID_STARTS = {
    "order": 1_000_001,
    "orderVersion": 2_000_001,
    "command": 3_000_001,
    "executionReport": 4_000_001,
    "fill": 5_000_001,
    "position": 6_000_001,
    "cashBalance": 7_000_001,
    "oco": 8_000_001,
    "orderStrategy": 9_000_001,
    "orderStrategyLink": 9_500_001,
}

_MUTABLE = (SimOrder, SimPosition, SimCashBalance, SimOrderStrategy)
_T = TypeVar("_T")


def _snapshot(entity: _T) -> _T:
    """Return a shallow copy of a dataclass instance (faster than ``copy.copy``)."""
    clone: _T = object.__new__(type(entity))
    clone.__dict__.update(entity.__dict__)
    return clone


class Records:
    """Every order, version, command, report and fill, and the subscribers told of each."""

    def __init__(
        self, config: SimConfig, clock: Clock, reference: Reference, subscribers: list[Subscriber]
    ) -> None:
        self._clock = clock
        self._reference = reference
        self._subscribers = subscribers
        offset = config.id_offset
        self._counters: dict[str, Iterator[int]] = {
            kind: itertools.count(start + offset) for kind, start in _ID_STARTS.items()
        }
        self._orders: dict[int, SimOrder] = {}
        self._orders_by_account: dict[int, list[SimOrder]] = {}
        self._versions: dict[int, list[SimOrderVersion]] = {}
        self._reports: list[SimExecutionReport] = []
        self._reports_by_order: dict[int, list[SimExecutionReport]] = {}
        self._commands: list[SimCommand] = []
        self._commands_by_order: dict[int, list[SimCommand]] = {}
        self._cl_ord_ids: set[tuple[int, str]] = set()
        self._fills: list[SimFill] = []
        self._fills_by_order: dict[int, list[SimFill]] = {}
        self._fills_by_account: dict[int, list[SimFill]] = {}
        # By id, for the REST reads of one entity (``item``, ``items``): no scan of them all.
        self._versions_by_id: dict[int, SimOrderVersion] = {}
        self._reports_by_id: dict[int, SimExecutionReport] = {}
        self._commands_by_id: dict[int, SimCommand] = {}
        self._fills_by_id: dict[int, SimFill] = {}

    def next_id(self, kind: str) -> int:
        """Return the next id of an entity type (a key of ``_ID_STARTS``)."""
        return next(self._counters[kind])

    # --- events ---------------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` on every change; return a function that unsubscribes."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, account_id: int, entity_type: str, event_type: str, entity: Entity) -> None:
        """Tell every subscriber of a change to an entity of an account."""
        if not self._subscribers:
            return
        # Orders, positions and cash change in place later; a subscriber may keep the event.
        # The other entities never change after they are published.
        snapshot = _snapshot(entity) if isinstance(entity, _MUTABLE) else entity
        user_id = self._reference.account_of(account_id).user_id
        change = EntityChange(user_id, entity_type, event_type, snapshot)
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(change)
            except Exception:  # one broken subscriber must not stop the market
                log.exception("sim_subscriber_failed", entity_type=entity_type)

    # --- records --------------------------------------------------------------------------
    def add_order(self, order: SimOrder) -> None:
        """Record a new order and its first version (published by the caller)."""
        self._orders[order.id] = order
        self._orders_by_account.setdefault(order.account_id, []).append(order)
        self._versions[order.id] = [order.version]
        self._versions_by_id[order.version.id] = order.version

    def command(
        self,
        order: SimOrder,
        command_type: str,
        status: str,
        cl_ord_id: str | None,
        is_automated: bool,
    ) -> SimCommand:
        """Record and publish a command on an order."""
        command = SimCommand(
            self.next_id("command"), order.id, self._clock.now(), command_type, status,
            cl_ord_id, is_automated,
        )  # fmt: skip
        self._commands.append(command)
        self._commands_by_order.setdefault(order.id, []).append(command)
        self._commands_by_id[command.id] = command
        if cl_ord_id is not None:
            self._cl_ord_ids.add((order.account_id, cl_ord_id))
        self.publish(order.account_id, "command", "created", command)
        return command

    def report(
        self,
        order: SimOrder,
        exec_type: str,
        last_qty: int | None = None,
        last_px: Decimal | None = None,
        reject_reason: str | None = None,
        text: str = "",
    ) -> SimExecutionReport:
        """Record and publish an execution report of an order as it is now."""
        commands = self._commands_by_order.get(order.id)
        report = SimExecutionReport(
            self.next_id("executionReport"), commands[-1].id if commands else None,
            order.account_id, order.contract_id, order.id, self._clock.now(), exec_type,
            order.ord_status, order.action, order.filled_qty, order.avg_fill_price,
            last_qty, last_px, reject_reason, text,
        )  # fmt: skip
        self._reports.append(report)
        self._reports_by_order.setdefault(order.id, []).append(report)
        self._reports_by_id[report.id] = report
        self.publish(order.account_id, "executionReport", "created", report)
        return report

    def new_version(self, order: SimOrder, version: SimOrderVersion) -> None:
        """Make ``version`` (a changed copy of the current one) the order's current version."""
        version.id = self.next_id("orderVersion")
        self._versions[order.id].append(version)
        self._versions_by_id[version.id] = version
        order.version = version
        self.publish(order.account_id, "orderVersion", "created", version)

    def add_fill(self, fill: SimFill) -> None:
        """Record and publish a fill."""
        self._fills.append(fill)
        self._fills_by_order.setdefault(fill.order_id, []).append(fill)
        self._fills_by_account.setdefault(fill.account_id, []).append(fill)
        self._fills_by_id[fill.id] = fill
        self.publish(fill.account_id, "fill", "created", fill)

    def has_cl_ord_id(self, account_id: int, cl_ord_id: str) -> bool:
        """Return whether an account has sent a command with this ``clOrdId``."""
        return (account_id, cl_ord_id) in self._cl_ord_ids

    # --- reads ----------------------------------------------------------------------------
    def orders(self, account_id: int | None = None) -> list[SimOrder]:
        """Return orders, oldest first."""
        if account_id is None:
            return list(self._orders.values())
        return list(self._orders_by_account.get(account_id, ()))

    def order(self, order_id: int) -> SimOrder | None:
        """Return one order."""
        return self._orders.get(order_id)

    def order_of(self, order_id: int) -> SimOrder:
        """Return an order that must exist (KeyError if unknown)."""
        return self._orders[order_id]

    def order_versions(self, order_id: int) -> list[SimOrderVersion]:
        """Return an order's versions, oldest first."""
        return list(self._versions.get(order_id, ()))

    def execution_reports(self, order_id: int | None = None) -> list[SimExecutionReport]:
        """Return execution reports, of one order or all."""
        if order_id is None:
            return list(self._reports)
        return list(self._reports_by_order.get(order_id, ()))

    def commands(self, order_id: int | None = None) -> list[SimCommand]:
        """Return commands, of one order or all."""
        if order_id is None:
            return list(self._commands)
        return list(self._commands_by_order.get(order_id, ()))

    def entity(self, kind: str, entity_id: int) -> Any | None:
        """Return one order, ``orderVersion``, ``executionReport``, ``command`` or ``fill``."""
        tables: dict[str, Mapping[int, Any]] = {
            "order": self._orders,
            "orderVersion": self._versions_by_id,
            "executionReport": self._reports_by_id,
            "command": self._commands_by_id,
            "fill": self._fills_by_id,
        }
        return tables[kind].get(entity_id)

    def fills(self, order_id: int | None = None, account_id: int | None = None) -> list[SimFill]:
        """Return fills, of one order, one account, or all."""
        if order_id is not None:
            found: Iterable[SimFill] = self._fills_by_order.get(order_id, ())
            return [f for f in found if account_id is None or f.account_id == account_id]
        if account_id is not None:
            return list(self._fills_by_account.get(account_id, ()))
        return list(self._fills)
