"""The ``tradebridge`` command; each command group lives in its own module of this package."""

from __future__ import annotations

import typer

from tradebridge.cli.broker import register as register_broker_commands
from tradebridge.cli.config import config_app
from tradebridge.cli.db import db_app
from tradebridge.cli.init import register as register_init_command
from tradebridge.cli.kill import register as register_kill_commands
from tradebridge.cli.notify import notify_app
from tradebridge.cli.reconcile import reconcile_app
from tradebridge.cli.review import review_app
from tradebridge.cli.run import register as register_run_commands
from tradebridge.cli.signals import register as register_signal_commands
from tradebridge.cli.sim import sim_app
from tradebridge.cli.tokens import tokens_app

app = typer.Typer(
    name="tradebridge",
    help="TradingView alerts and Postgres rows to Tradovate orders, placed exactly once.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
app.add_typer(sim_app, name="sim")
app.add_typer(db_app, name="db")
app.add_typer(review_app, name="review")
app.add_typer(reconcile_app, name="reconcile")
app.add_typer(config_app, name="config")
app.add_typer(tokens_app, name="tokens")
app.add_typer(notify_app, name="notify")
register_broker_commands(app)
register_run_commands(app)
register_init_command(app)
register_kill_commands(app)
register_signal_commands(app)


@app.command()
def version() -> None:
    """Print the installed version."""
    from tradebridge import __version__

    typer.echo(__version__)


def main() -> None:
    """Run the command line."""
    app()
