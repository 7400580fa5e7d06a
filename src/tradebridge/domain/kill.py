"""The kill switch: global or per account, who threw it, when and why (docs/kill-switch.md).

Its state lives in the database (``kill_switches``, migration 0007); ``[risk] kill_switch =
true`` in the settings forces the global switch on besides, and ``tradebridge resume``
cannot release that one (only the settings can). An account is stopped when its own switch
or the global one is on. Pure types, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tradebridge.errors import InvalidInput

GLOBAL_SCOPE = "global"
_ACCOUNT_PREFIX = "account:"
RULE = "kill_switch"
"""The rule's name, as denials and ``order_history`` give it."""
SETTINGS_SOURCE = "risk.kill_switch = true in the settings"
"""Who holds the global switch on when the settings force it."""


def scope_of(account: str | None) -> str:
    """Return the ``kill_switches.scope`` of an account's switch (None: the global one)."""
    if account is None:
        return GLOBAL_SCOPE
    if not account or account != account.strip():
        raise InvalidInput(f"account name {account!r} is empty or has surrounding spaces",
                           field="account")  # fmt: skip
    return _ACCOUNT_PREFIX + account


def account_of(scope: str) -> str | None:
    """Return the account of a scope (None: global); ``InvalidInput`` for another text."""
    if scope == GLOBAL_SCOPE:
        return None
    if scope.startswith(_ACCOUNT_PREFIX) and len(scope) > len(_ACCOUNT_PREFIX):
        return scope.removeprefix(_ACCOUNT_PREFIX)
    raise InvalidInput(f"kill switch scope {scope!r} is neither 'global' nor 'account:NAME'")


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """One switch as last set: on or off, by whom, through what, when, why."""

    account: str | None  # None: the global switch
    engaged: bool
    changed_by: str
    changed_at: datetime | None
    reason: str | None = None
    via: str = "sql"

    @property
    def scope(self) -> str:
        """Return the switch's scope (``global`` or ``account:NAME``)."""
        return scope_of(self.account)

    def describe(self) -> str:
        """Say which switch it is, its state, who set it, when and why, in one clause."""
        what = "global" if self.account is None else f"account {self.account}"
        return f"{what} {'on' if self.engaged else 'off'}, {self.provenance()}"

    def provenance(self) -> str:
        """Say who set the switch, when, through what and why."""
        when = f" at {self.changed_at.isoformat(timespec='seconds')}" if self.changed_at else ""
        why = f": {self.reason}" if self.reason else ""
        return f"set by {self.changed_by}{when} via {self.via}{why}"

    def as_json(self) -> dict[str, object]:
        """Return the switch as JSON-ready data."""
        return {
            "scope": self.scope,
            "account": self.account,
            "engaged": self.engaged,
            "changed_by": self.changed_by,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
            "via": self.via,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class KillSwitches:
    """Every switch the database holds, and whether the settings force the global one on."""

    switches: Mapping[str, KillSwitch] = field(default_factory=dict)  # by scope
    forced: bool = False

    @classmethod
    def of(cls, switches: Iterable[KillSwitch], *, forced: bool = False) -> KillSwitches:
        """Return the set of ``switches`` (one per scope)."""
        return cls({s.scope: s for s in switches}, forced)

    def newest(self, other: KillSwitches) -> KillSwitches:
        """Return, scope by scope, the switch last changed of the two views (a claim's
        snapshot and the process's watch: whichever read later knows the later change)."""
        merged = dict(self.switches)
        for scope, theirs in other.switches.items():
            ours = merged.get(scope)
            if ours is None or _changed(theirs) > _changed(ours):
                merged[scope] = theirs
        return KillSwitches(merged, self.forced or other.forced)

    @property
    def global_switch(self) -> KillSwitch | None:
        """Return the global switch as the database has it (None: never thrown)."""
        return self.switches.get(GLOBAL_SCOPE)

    @property
    def global_on(self) -> bool:
        """Return whether every account is stopped (the database or the settings say so)."""
        found = self.global_switch
        return self.forced or (found is not None and found.engaged)

    def engaged(self) -> list[KillSwitch]:
        """Return the switches that are on, the global one first, then by account."""
        on = [s for s in self.switches.values() if s.engaged]
        return sorted(on, key=lambda s: (s.account is not None, s.account or ""))

    def stopping(self, account: str | None) -> str | None:
        """Return why new orders of ``account`` are refused, or None if they are not.

        The global switch wins over the account's own (it names the wider stop).
        """
        if self.forced:
            return f"{RULE} global, {SETTINGS_SOURCE}"
        found = self.global_switch
        if found is not None and found.engaged:
            return f"{RULE} {found.describe()}"
        if account is not None:
            own = self.switches.get(scope_of(account))
            if own is not None and own.engaged:
                return f"{RULE} {own.describe()}"
        return None

    def summary(self) -> str:
        """Say in one line which switches are on (for the banner and the logs)."""
        parts = []
        if self.forced:
            parts.append(f"global ON ({SETTINGS_SOURCE})")
        for switch in self.engaged():
            if switch.account is None and self.forced:
                continue
            name = "global" if switch.account is None else switch.account
            parts.append(f"{name} ON ({switch.provenance()})")
        return "; ".join(parts) if parts else "off"

    def as_json(self) -> dict[str, object]:
        """Return the state as JSON-ready data (``/healthz``, ``GET /kill``)."""
        found = self.global_switch
        return {
            "global": self.global_on,
            "forced_by_settings": self.forced,
            "global_switch": found.as_json() if found is not None else None,
            "accounts": {s.account: s.as_json() for s in self.engaged() if s.account is not None},
        }


@dataclass(frozen=True, slots=True)
class KillSwitchChange:
    """What one kill or resume did: the switch before and after, the flatten rows queued."""

    before: KillSwitch | None
    after: KillSwitch
    signal_ids: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Return whether the switch was flipped (a kill of a switch already on is not)."""
        was = self.before is not None and self.before.engaged
        return was != self.after.engaged


def _changed(switch: KillSwitch) -> datetime:
    """Return when a switch last changed (never: the earliest time there is)."""
    return switch.changed_at or datetime.min.replace(tzinfo=UTC)
