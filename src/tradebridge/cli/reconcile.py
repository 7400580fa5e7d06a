"""``tradebridge reconcile``: what reconcile's position check found, and an operator's word.

Reconcile compares each quiet account's positions at the broker with the signed fills of
tradebridge's own orders (docs/dispatcher.md "Positions"). What nothing explains (a trade by
hand, another tool, a lost fill, a liquidation by the broker) is a divergence, announced by
the notifier until it is explained again or accepted:

* ``reconcile positions [--account NAME] [--json]``: the last check of every account and
  contract: the broker's net, what tradebridge's fills explain, what was accepted besides,
  and any divergence;
* ``reconcile accept ACCOUNT [--contract C] [--note TEXT]``: take the broker's position as
  the last check read it (the divergence ends; its notice says resolved).

Exit codes: 0 done; 1 nothing to accept or the database is unreachable; 2 bad usage.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from tradebridge.cli._shared import (
    LedgerOptions,
    fail,
    group,
    ledger_url,
    out,
    run_on_ledger,
    takes,
)

if TYPE_CHECKING:
    from tradebridge.store.ledger import Ledger, PositionCheck

reconcile_app = group(
    "reconcile", "Positions at the broker against what tradebridge's orders explain."
)
LedgerCommand = takes(LedgerOptions)


def _url(ctx: typer.Context) -> str:
    where = LedgerOptions.of(ctx)
    return ledger_url(where.database_url, where.data_dir, where.config)


@reconcile_app.command(cls=LedgerCommand)
def positions(
    ctx: typer.Context,
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Show the last position check of each account and contract."""

    async def work(ledger: Ledger) -> list[PositionCheck]:
        return await ledger.position_checks(account)

    checks = run_on_ledger(_url(ctx), work)
    for c in checks:
        if as_json:
            out.print_json(json.dumps({
                "account": c.account_name, "contract": c.contract,
                "broker_net": str(c.broker_net), "ours": str(c.ours),
                "accepted": str(c.accepted), "unexplained": str(c.unexplained),
                "accepted_by": c.accepted_by,
                "checked_at": None if c.checked_at is None else c.checked_at.isoformat(),
                "diverged_since": (None if c.diverged_since is None
                                   else c.diverged_since.isoformat()),
            }))  # fmt: skip
            continue
        state = (
            f"DIVERGED since {c.diverged_since:%Y-%m-%d %H:%M:%S}, {c.unexplained:+} unexplained"
            if c.diverged_since is not None
            else "ok"
        )
        out.print(escape(
            f"{c.account_name}  {c.contract}  broker {c.broker_net:+}  tradebridge {c.ours:+}  "
            f"besides {c.accepted:+} ({c.accepted_by})  {state}"
        ))  # fmt: skip
    if not checks and not as_json:
        out.print("no position check has run yet (dispatcher.position_check_s)")


@reconcile_app.command(cls=LedgerCommand)
def accept(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help="the account whose positions to accept")],
    contract: Annotated[str | None, typer.Option(help="only this contract (e.g. MNQZ6)")] = None,
    note: Annotated[str, typer.Option(help="who accepted it and why")] = "",
) -> None:
    """Take the broker's positions of ACCOUNT as the last check read them: a divergence ends."""
    by = "operator" + (f": {note}" if note else "")

    async def work(ledger: Ledger) -> list[str]:
        return await ledger.accept_positions(account, contract, by)

    accepted = run_on_ledger(_url(ctx), work)
    if not accepted:
        what = f"{account} {contract}" if contract else account
        raise fail(f"no position check of {what} to accept (`tradebridge reconcile positions`)", 1)
    out.print(escape(f"{account}: accepted {', '.join(accepted)} as the broker holds them"))
