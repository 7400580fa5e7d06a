"""``tradebridge kill`` and ``tradebridge resume``: the kill switch (docs/kill-switch.md).

The switch lives in the ledger, so these need the database only (``--database-url``, a
running ``up``, or the settings), not the broker: every worker and webhook process sees the
change within milliseconds (NOTIFY; ``serve.kill_switch_poll_s`` at the latest). With
``--flatten`` the kill queues one ``flatten`` row per affected account for the workers;
``--wait`` follows them to their outcome. ``tradebridge flatten --all`` flattens through the
broker directly, workers or not.

Exit codes: 0 done; 1 the database failed, or (``--wait``) a flatten failed or did not end
in time; 2 bad usage (an account the settings do not configure, nothing to flatten).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import time
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape

from tradebridge.cli._shared import (
    LedgerOptions,
    ledger_url,
    load,
    out,
    run_on_ledger,
    takes,
    warn,
)

if TYPE_CHECKING:
    from tradebridge.config import Settings
    from tradebridge.store.ledger import Ledger, LedgerRow

T = TypeVar("T")

LedgerCommand = takes(LedgerOptions)

AccountsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--account", "-a", help="this account's switch (repeatable); none: the global switch"
    ),
]
ReasonOpt = Annotated[str | None, typer.Option(help="why, kept with the switch and shown")]
ByOpt = Annotated[
    str | None, typer.Option(help="who asks", show_default="your user name @ this host")
]


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _known_accounts(settings: Settings, where: LedgerOptions, url: str) -> list[str]:
    """Return the accounts a global flatten covers: the configured ones, else those of the
    running ``up`` stack whose database this is."""
    from tradebridge.runtime.endpoints import read_endpoints

    if settings.accounts:
        return [a.name for a in settings.accounts]
    found = read_endpoints(where.data_dir or settings.data_dir)
    if found is not None and found.get("database_url") == url:
        return [str(name) for name in found.get("accounts") or []]
    return []


def kill(
    ctx: typer.Context,
    account: AccountsOpt = None,
    flatten: Annotated[
        bool,
        typer.Option(
            "--flatten",
            help="also cancel the working orders and close the positions of the affected "
            "accounts (a flatten row each, placed by the workers)",
        ),
    ] = False,
    reason: ReasonOpt = None,
    by: ByOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="with --flatten: follow the flattens to their outcome")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits at most")] = 30.0,
) -> None:
    """Throw the kill switch: new orders are denied, exits and flattens still pass.

    Without --account, every account (the global switch). Every worker and webhook sees it
    within a second, and a restart keeps it; `tradebridge resume` releases it.
    """
    from tradebridge.intake.kill import throw_kill_switch

    where = LedgerOptions.of(ctx)
    settings = load(where.config)
    url = ledger_url(where.database_url, where.data_dir, where.config)
    known = _known_accounts(settings, where, url)

    async def work(ledger: Ledger) -> int:
        changes = await throw_kill_switch(
            ledger, account, flatten=flatten, configured=known, changed_by=_who(by), via="cli",
            reason=reason,
        )  # fmt: skip
        for change in changes:
            name = "every account" if change.after.account is None else change.after.account
            line = f"kill switch ON for {name} ({change.after.provenance()})"
            if not change.changed and change.before is not None:
                line += f"; it was already on ({change.before.provenance()})"
            out.print(escape(line))
        signal_ids = [s for change in changes for s in change.signal_ids]
        code = 0
        if signal_ids:
            out.print(escape(f"flatten queued: {', '.join(signal_ids)}"))
            if wait:
                code = await _follow(ledger, signal_ids, timeout)
            else:
                out.print("the workers place them (`--wait` follows them)")
        found = await ledger.kill_switches(forced=settings.risk.kill_switch)
        out.print(escape(f"kill switches now: {found.summary()}"))
        return code

    raise typer.Exit(run_on_ledger(url, work))


def resume(
    ctx: typer.Context,
    account: AccountsOpt = None,
    reason: ReasonOpt = None,
    by: ByOpt = None,
) -> None:
    """Release the kill switch (without --account: the global one); accounts whose own
    switch is on stay stopped, and so does every account while the global one is."""
    from tradebridge.intake.kill import release_kill_switch

    where = LedgerOptions.of(ctx)
    settings = load(where.config)
    url = ledger_url(where.database_url, where.data_dir, where.config)

    async def work(ledger: Ledger) -> int:
        released = await release_kill_switch(
            ledger, account, changed_by=_who(by), via="cli", reason=reason
        )
        found = await ledger.kill_switches(forced=settings.risk.kill_switch)
        for name, change in released:
            what = "every account" if name is None else name
            if change is None:
                out.print(escape(f"the kill switch of {what} was not on; nothing changed"))
            else:
                was = change.before.provenance() if change.before is not None else ""
                out.print(escape(f"kill switch OFF for {what} (it was on: {was})"))
            still = found.stopping(name)
            if still is not None:
                warn(f"{what}: new orders are still denied ({still})")
        if settings.risk.kill_switch and account is None:
            warn(
                "risk.kill_switch = true in these settings holds the global switch on: remove "
                "it and restart the workers to trade again"
            )
        out.print(escape(f"kill switches now: {found.summary()}"))
        return 0

    raise typer.Exit(run_on_ledger(url, work))


async def _follow(ledger: Ledger, signal_ids: list[str], wait_s: float) -> int:
    """Wait for each flatten row's outcome (at most ``wait_s``); print it; return the exit
    code (1 if one failed or is still open)."""
    from tradebridge.domain.lifecycle import FINAL_STATUSES, SignalStatus

    deadline = time.monotonic() + wait_s
    left = list(signal_ids)
    found: dict[str, LedgerRow] = {}
    while left and time.monotonic() < deadline:
        for signal_id in list(left):
            row = await ledger.get(signal_id)
            if row is None:
                continue
            found[signal_id] = row
            if row.status in FINAL_STATUSES or row.status is SignalStatus.NEEDS_REVIEW:
                left.remove(signal_id)
        if left:
            await asyncio.sleep(0.1)
    code = 0
    for signal_id in signal_ids:
        row = found.get(signal_id)
        line, ok = await _outcome(ledger, signal_id, row, signal_id in left, wait_s)
        out.print(escape(line))
        code = code if ok else 1
    return code


async def _outcome(
    ledger: Ledger, signal_id: str, row: LedgerRow | None, open_: bool, wait_s: float
) -> tuple[str, bool]:
    from tradebridge.domain.lifecycle import SignalStatus

    account = row.account_name if row is not None else "?"
    if row is None or open_:
        status = row.status.value if row is not None else "missing"
        why = (f"{account}: flatten {signal_id} still {status} after {wait_s:g} s: is a worker "
               "running (`tradebridge serve`)?")  # fmt: skip
        return why, False
    if row.status is SignalStatus.FILLED:
        contracts: list[str] = []
        for event in await ledger.history(signal_id):
            detail = event.detail if isinstance(event.detail, dict) else {}
            if detail.get("plan") == "flatten":
                contracts = [str(c) for c in detail.get("contracts") or []]
        return f"{account}: flattened {', '.join(contracts) or 'its positions'}", True
    if row.status is SignalStatus.DENIED and (row.error_message or "").startswith("nothing to do"):
        return f"{account}: already flat (no position, no working order)", True
    return f"{account}: flatten {signal_id} {row.status.value}: {row.error_message or ''}", False


def register(app: typer.Typer) -> None:
    """Add ``kill`` and ``resume`` to the ``tradebridge`` command."""
    for command in (kill, resume):
        app.command(cls=LedgerCommand)(command)
