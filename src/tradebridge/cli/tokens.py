"""``tradebridge tokens``: list each account's token; ``tokens serve`` keeps them fresh.

The bare group lists the tokens as it always has (``broker.tokens``, the broker commands'
options after it). ``tokens serve`` is the token service (``runtime/token_service.py``):
it runs until SIGTERM/SIGINT, or with ``--once`` renews what needs it, writes every key and
exits, for cron.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tradebridge.cli import broker
from tradebridge.cli._shared import ConfigOpt, fail, group_takes, out
from tradebridge.errors import BridgeError, ConfigError

if TYPE_CHECKING:
    from tradebridge.config import Settings

SERVE_EPILOG = (
    "Exit codes: 0 stopped by SIGTERM/SIGINT (with --once: every user's token written); 1 no "
    "user has credentials, Redis cannot be reached, or (--once) a user's login failed; 2 bad "
    "settings."
)


tokens_app = typer.Typer(
    name="tokens",
    cls=group_takes(broker.BrokerOptions),  # the broker commands' options, as always
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
    rich_markup_mode="rich",
    epilog=broker.EPILOG,
)


@tokens_app.callback()
def tokens(ctx: typer.Context, account: broker.OnlyAccountOpt = None) -> None:
    """Show each account's token: Redis key, kind, user, expiry (never the token).

    `tradebridge tokens serve` keeps them fresh for every user with credentials.
    """
    if ctx.invoked_subcommand is None:
        broker.tokens(ctx, account)


RedisUrlOpt = Annotated[
    str | None, typer.Option(envvar="REDIS_URL", help="the Redis the workers read tokens from")
]


@tokens_app.command("serve", epilog=SERVE_EPILOG)
def serve(
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    once: Annotated[
        bool, typer.Option("--once", help="renew what needs it, write every key, exit (cron)")
    ] = False,
) -> None:
    """Keep token:<account> fresh in Redis for every configured user with credentials.

    One login per user, renewed before expiry, written under all the user's account keys;
    keys Redis lost are put back, and the token is checked with Tradovate every
    tokens.verify_interval_s. Same lock, login cap and lockout as the workers.
    """
    from tradebridge.runtime.token_service import NoUserToServe, run_once, run_token_service

    settings = _settings(config, redis_url)
    _configure_logs(settings, to_stderr=once)
    try:
        if once:
            results = asyncio.run(run_once(settings))
        else:
            asyncio.run(run_token_service(settings))
            return
    except ConfigError as e:
        code = 1 if isinstance(e, NoUserToServe) else 2
        raise fail(str(e), code) from None
    except (BridgeError, OSError) as e:
        raise fail(str(e) or type(e).__name__, 1) from None
    for result in results:
        keys = ", ".join(result.keys)
        if result.error is not None:
            out.print(f"{escape(result.user)}: [red]failed[/red]: {escape(result.error)}")
            continue
        assert result.expires_at is not None
        expires = result.expires_at.isoformat(timespec="seconds")
        out.print(f"{escape(result.user)}: {result.action}, expires {expires}, written to {keys}")
    if any(r.error is not None for r in results):
        raise typer.Exit(1)


def _settings(config: Path | None, redis_url: str | None) -> Settings:
    from tradebridge.config import load_settings

    overrides: dict[str, Any] = {"redis": {"url": redis_url}} if redis_url else {}
    try:
        return load_settings(config, **overrides)
    except ConfigError as e:
        raise fail(str(e), 2) from None


def _configure_logs(settings: Settings, *, to_stderr: bool) -> None:
    from tradebridge.obs.logging import configure_logging

    configure_logging(
        settings.logging.level,
        json_output=settings.logging.json_output,
        stream=sys.stderr if to_stderr else None,
    )
