"""``tradebridge init``: from Tradovate credentials to a checked ``tradebridge.toml``.

Asks (or, with ``--non-interactive``, takes from flags) the environment, the dialect and one
or more Tradovate users; logs each in, lists its accounts and lets the user pick; writes the
TOML file (no secret) and the secrets file (mode 0600); then runs the doctor on what it wrote
and prints its verdict. Passwords and API secrets are typed at a hidden prompt or read from
the variables the configuration names (``TRADEBRIDGE_USER_<NAME>_PASSWORD`` / ``_SEC``, in
the environment or an existing secrets file), never from the command line, which ``ps``
shows. The work itself is ``runtime/setup.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import SecretStr
from rich.markup import escape

from tradebridge.cli._shared import ConfigOpt, DataDirOpt, err, fail, out
from tradebridge.errors import BridgeError, ConfigError

if TYPE_CHECKING:
    from tradebridge.brokers.base import AccountInfo
    from tradebridge.doctor.diagnosis import DoctorReport
    from tradebridge.runtime.setup import LoggedIn, NewUser, Setup, Target

EPILOG = (
    "Exit codes: 0 written and the doctor passed (or could not run: no Redis); 1 a login "
    "failed (nothing written) or the doctor found a problem (written); 2 bad usage, an "
    "existing file without --force, live not confirmed (nothing written)."
)


class _Answers:
    """Where answers come from: the flags, else a prompt (``interactive``), else a default."""

    def __init__(self, *, interactive: bool, environ: dict[str, str]) -> None:
        self.interactive = interactive
        self.environ = environ

    def choice(self, given: str | None, question: str, options: Sequence[str]) -> str:
        """Return ``given``, or the answer to ``question`` among ``options`` (first: default)."""
        if given is not None:
            if given.lower() not in options:
                raise fail(f"{given!r} is not one of {', '.join(options)}", 2)
            return given.lower()
        if not self.interactive:
            return options[0]
        while True:
            answer = str(typer.prompt(f"{question} ({', '.join(options)})", default=options[0]))
            if answer.strip().lower() in options:
                return answer.strip().lower()
            err.print(f"choose one of {', '.join(options)}")

    def secret(
        self, variable: str, question: str, *, required: bool, quiet: bool = False
    ) -> SecretStr:
        """Return the secret in ``variable`` (environment, secrets file), else ask (hidden)."""
        if found := self.environ.get(variable):
            if not quiet:
                out.print(f"{escape(question)}: from {variable}")
            return SecretStr(found)
        if not self.interactive:
            if required:
                raise fail(
                    f"set {variable} in the environment (or in the secrets file): init never "
                    "takes a password on the command line, where `ps` shows it",
                    2,
                )
            return SecretStr("")
        typed = typer.prompt(
            question, hide_input=True, default="" if not required else None,
            show_default=False,
        )  # fmt: skip
        return SecretStr(str(typed))


def init(
    config: ConfigOpt = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            envvar="TRADEBRIDGE_ENV_FILE",
            help="secrets file to write (default: tradebridge.env beside the config)",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing config")] = False,
    non_interactive: Annotated[
        bool, typer.Option("--non-interactive", help="ask nothing: flags and variables only")
    ] = False,
    environment: Annotated[str | None, typer.Option(help="demo (default) or live")] = None,
    confirm_live: Annotated[
        bool, typer.Option("--confirm-live", help="live: trade real money (non-interactive)")
    ] = False,
    dialect: Annotated[
        str | None, typer.Option(help="native (default, API key) or tvbridge (TradingView)")
    ] = None,
    user: Annotated[
        list[str] | None,
        typer.Option("--user", help="a Tradovate user name; repeat for several"),
    ] = None,
    accounts: Annotated[
        str | None, typer.Option(help="all (default), or NAME,NAME of the listed accounts")
    ] = None,
    cid: Annotated[int | None, typer.Option(min=0, help="native: the API key's id")] = None,
    app_id: Annotated[str | None, typer.Option(help="native: the API key's name")] = None,
    native_url: Annotated[
        str | None, typer.Option(help="native REST base (a simulator); written when given")
    ] = None,
    bridge_url: Annotated[
        str | None, typer.Option(help="bridge base (a simulator); written when given")
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(envvar="REDIS_URL", help="Redis for the first tokens and the doctor"),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Set up tradebridge.toml: log in Tradovate users, pick accounts, check with doctor."""
    from tradebridge.config import ENV_FILE_NAME, read_env_file, user_variable
    from tradebridge.domain.enums import Dialect, Environment
    from tradebridge.obs.logging import configure_logging
    from tradebridge.runtime.setup import Target

    configure_logging("ERROR", json_output=True, stream=sys.stderr)
    config_path = config or Path("tradebridge.toml")
    if config_path.exists() and not force:
        raise fail(f"{config_path} exists; pass --force to replace it (nothing was changed)", 2)
    secrets_path = env_file or config_path.parent / ENV_FILE_NAME
    try:
        existing = read_env_file(secrets_path)
    except ConfigError as e:
        raise fail(str(e), 2) from None
    answers = _Answers(interactive=not non_interactive, environ={**existing, **os.environ})
    if non_interactive and not user:
        raise fail("--non-interactive needs at least one --user NAME", 2)
    if non_interactive:  # every password before the first login: all or nothing
        for name in user or []:
            answers.secret(user_variable(name, "PASSWORD"), "", required=True, quiet=True)

    env = Environment(answers.choice(environment, "Environment", ["demo", "live"]))
    if env is Environment.LIVE and not confirm_live:
        if non_interactive:
            raise fail("environment live trades real money: add --confirm-live", 2)
        typed = typer.prompt("Live trades real money. Type LIVE to confirm", default="")
        if str(typed).strip().lower() != "live":
            raise fail("live not confirmed; nothing was written", 2)
    target = Target(
        environment=env,
        dialect=Dialect(answers.choice(dialect, "Dialect", ["native", "tvbridge"])),
        native_url=native_url,
        bridge_url=bridge_url,
    )
    flow = _Flow(answers, target, user or [], accounts, cid=cid, app_id=app_id)
    try:
        chosen, stored = asyncio.run(flow.run(data_dir or Path(".tradebridge"), redis_url))
    except ConfigError as e:
        raise fail(str(e), 2) from None
    except (BridgeError, OSError) as e:
        raise fail(f"{type(e).__name__}: {e}; nothing was written", 1) from None
    setting = _env_file_setting(env_file, config_path)
    _write(config_path, secrets_path, target, chosen, setting=setting, data_dir=data_dir,
           force=force)  # fmt: skip
    _report(config_path, secrets_path, chosen, stored, flow.redis_shown)
    if stored is None:
        return
    checked = _checked(chosen)
    try:
        reports = asyncio.run(_check(config_path, checked, redis_url))
    except (BridgeError, OSError) as e:
        raise fail(f"the configuration is written, but doctor could not run: {e}", 1) from None
    if not _verdict(reports, checked, sum(len(accounts) for _user, accounts in chosen)):
        raise typer.Exit(1)


class _Flow:
    """The logins and the choice of accounts, in one event loop (prompts in between)."""

    def __init__(
        self,
        answers: _Answers,
        target: Target,
        users: Sequence[str],
        accounts: str | None,
        *,
        cid: int | None,
        app_id: str | None,
    ) -> None:
        self.answers = answers
        self.target = target
        self.users = list(users)
        self.accounts = accounts
        self.cid = cid
        self.app_id = app_id
        self.redis_shown = ""  # the Redis used, its password masked

    async def run(
        self, data_dir: Path, redis_url: str | None
    ) -> tuple[list[tuple[NewUser, list[AccountInfo]]], int | None]:
        """Log every user in, pick accounts, store the tokens; return the choice and how many
        keys were written (None: no Redis to write to)."""
        from tradebridge.runtime.setup import Setup

        async with Setup(self.target, data_dir=data_dir, redis_url=redis_url) as session:
            self.redis_shown = session.redis_url
            if not session.reachable:
                err.print(
                    f"Redis at {session.redis_url} does not answer: logging in without storing "
                    "tokens, and doctor will not run"
                )
            logged = await self._log_in_all(session)
            chosen = self._pick(logged)
            if not any(names for _user, names in chosen):
                raise ConfigError("no account chosen; nothing was written")
            stored: int | None = None
            if session.reachable:
                stored = 0
                for (entry, _picked), (_user, names) in zip(logged, chosen, strict=True):
                    stored += len(await session.store_tokens(entry, [a.name for a in names]))
            return chosen, stored

    async def _log_in_all(self, session: Setup) -> list[tuple[LoggedIn, list[AccountInfo]]]:
        """Log each user in; interactively, ask right away which of its accounts to trade."""
        logged: list[tuple[LoggedIn, list[AccountInfo]]] = []
        pending = list(self.users)
        while True:
            if pending:
                name = pending.pop(0)
            elif self.answers.interactive and (
                not logged or typer.confirm("Add another Tradovate user?", default=False)
            ):
                name = str(typer.prompt("Tradovate user name")).strip()
            else:
                return logged
            if any(entry.user.name == name for entry, _picked in logged):
                err.print(f"{name} is already set up; skipped")
                continue
            entry = await session.log_in(self._user(name))
            out.print(f"{escape(name)}: logged in; {_many(len(entry.accounts), 'account')}")
            _print_accounts(entry.accounts)
            asked = self.answers.interactive and self.accounts is None
            logged.append((entry, self._ask(entry) if asked else list(entry.accounts)))

    def _user(self, name: str) -> NewUser:
        from tradebridge.config import user_variable
        from tradebridge.domain.enums import Dialect
        from tradebridge.runtime.setup import DEFAULT_APP_ID, NewUser

        password = self.answers.secret(
            user_variable(name, "PASSWORD"), f"Password of {name}", required=True
        )
        if self.target.dialect is Dialect.TVBRIDGE:
            return NewUser(name, password)
        cid = self.cid
        if cid is None:
            cid = (
                int(typer.prompt("API key id (cid)", default=0)) if self.answers.interactive else 0
            )
        app = self.app_id
        if app is None:
            app = (
                str(typer.prompt("API key name (appId)", default=DEFAULT_APP_ID))
                if self.answers.interactive
                else DEFAULT_APP_ID
            )
        sec = self.answers.secret(
            user_variable(name, "SEC"), f"API secret (sec) of {name}", required=False
        )
        return NewUser(name, password, sec=sec, cid=cid, app_id=app)

    def _pick(
        self, logged: Sequence[tuple[LoggedIn, list[AccountInfo]]]
    ) -> list[tuple[NewUser, list[AccountInfo]]]:
        """Return each user's accounts: as answered, or as ``--accounts`` names them."""
        wanted = _names(self.accounts)
        if wanted is not None:
            listed = {a.name for entry, _picked in logged for a in entry.accounts}
            unknown = [name for name in wanted if name not in listed]
            if unknown:
                raise ConfigError(
                    f"--accounts names {', '.join(unknown)}, which no user lists "
                    f"(listed: {', '.join(sorted(listed)) or 'none'})"
                )
        taken: set[str] = set()
        chosen: list[tuple[NewUser, list[AccountInfo]]] = []
        for entry, picked in logged:
            if wanted is not None:
                picked = [a for a in entry.accounts if a.name in wanted]  # noqa: PLW2901
            mine = [a for a in picked if a.name not in taken]
            for account in picked:
                if account.name in taken:
                    err.print(f"{account.name} is listed by another user too; kept there")
            taken.update(a.name for a in mine)
            chosen.append((entry.user, mine))
        return chosen

    def _ask(self, entry: LoggedIn) -> list[AccountInfo]:
        while True:
            answer = str(
                typer.prompt(
                    f"Accounts of {entry.user.name} to trade: all, or numbers/names separated "
                    "by commas",
                    default="all",
                )
            )
            picked = _picked(answer, entry.accounts)
            if picked is not None:
                return picked
            err.print("answer all, or numbers or names from the list above")


def _names(accounts: str | None) -> list[str] | None:
    if accounts is None or accounts.strip().lower() == "all":
        return None
    return [name.strip() for name in accounts.split(",") if name.strip()]


def _picked(answer: str, listed: Sequence[AccountInfo]) -> list[AccountInfo] | None:
    """Return the accounts an answer names (numbers from 1 or names); None if it is wrong."""
    if answer.strip().lower() == "all":
        return list(listed)
    picked: list[AccountInfo] = []
    for part in (p.strip() for p in answer.split(",") if p.strip()):
        by_name = [a for a in listed if a.name == part]
        if by_name:
            picked += by_name
        elif part.isdigit() and 1 <= int(part) <= len(listed):
            picked.append(listed[int(part) - 1])
        else:
            return None
    return picked


def _print_accounts(accounts: Sequence[AccountInfo]) -> None:
    for number, account in enumerate(accounts, start=1):
        ids = (
            f"native id {account.native_id}"
            if account.native_id is not None
            else f"bridge id {account.bridge_id}"
        )
        flags = "".join(
            note
            for note, on in ((", READ-ONLY", account.readonly), (", inactive", not account.active))
            if on
        )
        out.print(f"  {number}. {escape(account.name)} ({ids}{flags})")


def _env_file_setting(env_file: Path | None, config: Path) -> str | None:
    """Return what ``env_file`` in the TOML must say (None: the default place)."""
    from tradebridge.config import ENV_FILE_NAME

    if env_file is None:
        return None
    where = env_file.resolve()
    home = config.resolve().parent
    if where == home / ENV_FILE_NAME:
        return None
    try:
        return str(where.relative_to(home))
    except ValueError:
        return str(where)


def _write(
    config: Path,
    secrets_path: Path,
    target: Target,
    chosen: list[tuple[NewUser, list[AccountInfo]]],
    *,
    setting: str | None,
    data_dir: Path | None,
    force: bool,
) -> None:
    from tradebridge.runtime.setup import render_config, write_config, write_secrets

    text = render_config(target, chosen, confirm_live=True, env_file=setting, data_dir=data_dir)
    variables = {k: v for user, _ in chosen for k, v in user.variables(target.dialect).items()}
    try:
        write_secrets(secrets_path, variables)
        write_config(config, text, force=force)
    except ConfigError as e:
        raise fail(str(e), 2) from None


def _report(
    config: Path,
    secrets_path: Path,
    chosen: list[tuple[NewUser, list[AccountInfo]]],
    stored: int | None,
    redis_url: str,
) -> None:
    count = sum(len(names) for _user, names in chosen)
    out.print(
        f"wrote {config} ({_many(len(chosen), 'user')}, {_many(count, 'account')}) and the "
        f"secrets to {secrets_path} (mode 0600)"
    )
    if stored is None:
        out.print(
            "doctor: skipped (Redis does not answer); start Redis or `tradebridge up`, then "
            "run `tradebridge doctor`"
        )
    else:
        out.print(f"stored the first tokens in Redis ({redis_url}) under {_many(stored, 'key')}")


def _many(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _checked(chosen: list[tuple[NewUser, list[AccountInfo]]]) -> list[tuple[str, str]]:
    """Return (user, account) for the first chosen account of each user.

    One account per user: the others were listed by the same login, and the native check
    calls ``/auth/me``, which Tradovate allows about 10 times an hour (reference §2.6, §7): a
    prop trader's twenty accounts would lock the user out for an hour.
    """
    return [(user.name, accounts[0].name) for user, accounts in chosen if accounts]


async def _check(
    config: Path, checked: list[tuple[str, str]], redis_url: str | None
) -> list[DoctorReport]:
    from tradebridge.runtime.setup import run_checks

    return await run_checks(config, [account for _user, account in checked], redis_url=redis_url)


def _verdict(reports: Sequence[DoctorReport], checked: list[tuple[str, str]], total: int) -> bool:
    from tradebridge.cli.broker import _print_report  # the doctor command's own printing

    for report in reports:
        _print_report(report)
    failed = [r.account or "?" for r in reports if not r.ok]
    if failed:
        out.print(
            f"doctor: [red]problems[/red] with {escape(', '.join(failed))} (above); the "
            "configuration is written: fix them and run `tradebridge doctor`"
        )
        return False
    which = ", ".join(f"{account} of {user}" for user, account in checked)
    rest = total - len(checked)
    others = (
        f"; the other {_many(rest, 'account')} came from the same logins' account lists "
        "(`tradebridge doctor --account NAME` checks one)"
        if rest
        else ""
    )
    out.print(f"doctor: [green]all checks passed[/green] ({escape(which)}){others}")
    return True


def register(app: typer.Typer) -> None:
    """Add ``init`` to the ``tradebridge`` app."""
    app.command(epilog=EPILOG)(init)
