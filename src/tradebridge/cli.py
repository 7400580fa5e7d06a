"""The ``tradebridge`` command."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tradebridge",
    help="TradingView alerts and Postgres rows to Tradovate orders, placed exactly once.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


@app.command()
def version() -> None:
    """Print the installed version."""
    from tradebridge import __version__

    typer.echo(__version__)


def main() -> None:
    """Run the command line."""
    app()
