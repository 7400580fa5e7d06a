"""``tradebridge notify test``: a test message to every configured channel.

See docs/notifications.md.
"""

from __future__ import annotations

import asyncio

import typer
from rich.markup import escape

from tradebridge.cli._shared import ConfigOpt, fail, group, load, out
from tradebridge.errors import ConfigError

notify_app = group("notify", "Notifications: try the configured channels.")


@notify_app.command("test")
def notify_test(config: ConfigOpt = None) -> None:
    """Send a test message to every channel; print how each went (exit 1: one failed)."""
    from tradebridge.runtime.notify import send_test

    settings = load(config)
    if not settings.notify.channels:
        raise fail("no notification channel is configured ([[notify.channels]]; "
                   "docs/notifications.md)", 2)  # fmt: skip
    try:
        records = asyncio.run(send_test(settings))
    except ConfigError as e:
        raise fail(str(e), 2) from None
    for record in records:
        outcome = "[green]sent[/green]" if record.outcome == "sent" else "[red]failed[/red]"
        why = f": {escape(record.error)}" if record.error else ""
        out.print(f"{escape(record.channel)}: {outcome} after {record.attempts} attempt(s){why}")
    if any(r.outcome != "sent" for r in records):
        raise typer.Exit(1)
