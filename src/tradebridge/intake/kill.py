"""Throwing and releasing the kill switch: one way for the CLI, the HTTP endpoint and the
webhook's ``kill`` action (docs/kill-switch.md).

A kill of every account throws the global switch; a kill of named accounts throws each one's.
With ``flatten``, one ``flatten`` row per affected account is queued in the same transaction:
the workers close its positions and cancel its working orders (a flatten passes the switch),
in turn with the account's other rows, and the rows say what was done (``filled``: done;
``denied`` "nothing to do": the account was already flat).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from tradebridge.config import Settings
from tradebridge.domain.kill import KillSwitchChange
from tradebridge.errors import InvalidInput
from tradebridge.store.ledger import Ledger


def new_kill_group_id() -> str:
    """Return a fresh group id for the flatten rows of one kill (``kill-<hex>``)."""
    return f"kill-{secrets.token_hex(8)}"


def checked_accounts(names: Sequence[str], configured: Sequence[str]) -> list[str]:
    """Return ``names`` once each; ``InvalidInput`` for one the settings do not configure
    (when they configure any: an intake-only process may have none)."""
    found: list[str] = []
    for name in names:
        if configured and name not in configured:
            raise InvalidInput(
                f"account {name!r} is not configured (configured: {', '.join(configured)})",
                field="account",
            )
        if name not in found:
            found.append(name)
    return found


async def throw_kill_switch(
    ledger: Ledger,
    accounts: Sequence[str] | None,
    *,
    flatten: bool,
    configured: Sequence[str],
    changed_by: str,
    via: str,
    reason: str | None = None,
    group_id: str | None = None,
) -> list[KillSwitchChange]:
    """Throw the global switch (``accounts`` None) or each named account's; with ``flatten``
    queue a flatten of every affected account (``configured`` for the global switch).

    ``InvalidInput`` (nothing changed) for an account not configured, or a global flatten
    without configured accounts.
    """
    group = group_id or new_kill_group_id()
    if accounts is None:
        targets = list(configured)
        if flatten and not targets:
            raise InvalidInput(
                "cannot flatten every account: no accounts are configured here ([[accounts]]); "
                "name them (--account / account), or kill without flatten",
                field="flatten",
            )
    else:
        targets = checked_accounts(accounts, configured)
        if not targets:
            raise InvalidInput("no account named", field="account")
    rows = [(f"{group}-{n}", name) for n, name in enumerate(targets, 1)] if flatten else []
    if accounts is None:
        change = await ledger.engage_kill_switch(
            None, changed_by=changed_by, via=via, reason=reason, flatten=rows, group_id=group
        )
        return [change]
    changes = []
    for name in targets:
        mine = [(signal_id, account) for signal_id, account in rows if account == name]
        changes.append(
            await ledger.engage_kill_switch(
                name, changed_by=changed_by, via=via, reason=reason, flatten=mine, group_id=group
            )
        )
    return changes


async def release_kill_switch(
    ledger: Ledger,
    accounts: Sequence[str] | None,
    *,
    changed_by: str,
    via: str,
    reason: str | None = None,
) -> list[tuple[str | None, KillSwitchChange | None]]:
    """Release the global switch (``accounts`` None) or each named account's; return, per
    switch, the change (None: it was not on)."""
    names: Sequence[str | None] = [None] if accounts is None else list(dict.fromkeys(accounts))
    found: list[tuple[str | None, KillSwitchChange | None]] = []
    for name in names:
        change = await ledger.release_kill_switch(
            name, changed_by=changed_by, via=via, reason=reason
        )
        found.append((name, change))
    return found


def configured_accounts(settings: Settings) -> list[str]:
    """Return the names of the configured accounts, in the settings' order."""
    return [a.name for a in settings.accounts]
