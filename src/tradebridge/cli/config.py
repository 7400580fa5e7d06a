"""``tradebridge config``: validate the settings, show where each came from, describe them.

* ``config check``: load and validate; exit 0 with a one-paragraph summary (environment,
  dialects, accounts and their users, where tokens come from, the database and Redis), or
  exit 2 listing every problem, each naming the setting and the fix. Besides the model's own
  validation it reports what a worker would only find at start: live without
  ``tradovate.confirm_live``, accounts listed twice, the webhook's settings; and warns of
  what would fail later (an account nothing gets a token for, a ``native_url`` without /v1).
* ``config show``: every effective value, secrets masked, and where it came from: a default,
  the settings file (its path), a variable (its name), ``DATABASE_URL``/``REDIS_URL``.
* ``config schema``: the settings' JSON schema, or ``docs/configuration.md`` (markdown).

No value is ever echoed in an error: it may be a secret.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, get_args

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.markup import escape

from tradebridge.cli._provenance import (
    Origin,
    Provenance,
    SettingPath,
    dotted,
    env_name,
    mask_secret_url,
)
from tradebridge.cli._shared import ConfigOpt, SharedOptions, group, out, takes
from tradebridge.config import DEFAULT_CONFIG_FILE, load_settings
from tradebridge.domain.enums import Dialect
from tradebridge.errors import ConfigError

if TYPE_CHECKING:
    from tradebridge.config import AccountConfig, Settings

config_app = group(
    "config",
    "The settings: validate them (check), show each value and where it came from (show), "
    "describe every setting (schema).",
)

_REFERENCE = "docs/configuration.md"
_CREDENTIALS = {Dialect.NATIVE: "native", Dialect.TVBRIDGE: "bridge"}


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigOptions(SharedOptions):
    """The option of ``check`` and ``show``: the settings file."""

    config: ConfigOpt = None


ConfigCommand = takes(ConfigOptions)


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the settings: the setting, what is wrong, how to fix it."""

    setting: str
    message: str
    fix: str = ""
    warning: bool = False

    def lines(self) -> list[str]:
        """Return the problem as printed: a line, and the fix on the next."""
        label = "[yellow]warning:[/yellow]" if self.warning else "[red]error:[/red]"
        text = self.message if self.message.startswith(self.setting) else (
            f"{self.setting}: {self.message}"
        )  # fmt: skip
        found = [f"{label} {escape(text)}"]
        if self.fix:
            found.append(f"  fix: {escape(self.fix)}")
        return found


@dataclasses.dataclass(frozen=True, slots=True)
class Inspection:
    """The settings (None if they do not load), their sources, and every problem found."""

    settings: Settings | None
    provenance: Provenance | None
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        """Return the problems that are not warnings."""
        return [p for p in self.problems if not p.warning]


def inspect_settings(config: Path | None) -> Inspection:
    """Load the settings of ``config`` and the environment; collect every problem."""
    try:
        provenance = Provenance(config)
    except tomllib.TOMLDecodeError as e:
        path = config or Path(os.environ.get("TRADEBRIDGE_CONFIG") or DEFAULT_CONFIG_FILE)
        # The decoder's message gives the line and column, never the text there.
        problem = Problem(str(path), f"not valid TOML: {e}", "correct the syntax at that line")
        return Inspection(None, None, [problem])
    except SettingsError as e:
        return Inspection(None, None, [_unparsable_variable(e)])
    problems = _accounts_listed_twice(provenance)
    try:
        settings = load_settings(config)
    except ConfigError as e:
        if isinstance(e.__cause__, ValidationError):
            problems += _validation_problems(e.__cause__, provenance)
            problems += _tradovate_problems_alone(provenance)
        else:  # the file named by --config or TRADEBRIDGE_CONFIG does not exist
            problems.append(
                Problem("--config", str(e), "name an existing file, or unset TRADEBRIDGE_CONFIG")
            )
        return Inspection(None, provenance, problems)
    return Inspection(settings, provenance, problems + start_up_problems(settings, provenance))


def _tradovate_problems_alone(provenance: Provenance) -> list[Problem]:
    """Check ``[tradovate]`` (live confirmed? hosts?) when other sections keep the rest out."""
    from tradebridge.config import Settings, TradovateConfig

    try:
        section = TradovateConfig.model_validate(provenance.raw("tradovate") or {})
    except ValidationError:
        return []  # its own errors are reported already
    return _tradovate_problems(Settings.model_construct(tradovate=section), provenance)


def _unparsable_variable(error: SettingsError) -> Problem:
    match = re.search(r'field "([^"]+)"', str(error))
    if match is None:
        return Problem("settings", str(error))
    variable = env_name((match.group(1),))
    return Problem(
        variable,
        f"{variable} is not valid JSON (a list or table in a variable is JSON)",
        """e.g. TRADEBRIDGE_ACCOUNTS='[{"name": "DEMO1"}]', or set it in the settings file""",
    )


def _accounts_listed_twice(provenance: Provenance) -> list[Problem]:
    raw = provenance.raw("accounts")
    if not isinstance(raw, list):
        return []
    first: dict[str, int] = {}
    problems = []
    for index, entry in enumerate(raw):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            problems.append(
                Problem(
                    f"accounts[{index}].name",
                    f"account {name} is listed twice (accounts[{first[name]}] and "
                    f"accounts[{index}])",
                    "give each [[accounts]] entry its own name: remove or rename one",
                )
            )
        else:
            first[name] = index
    return problems


def _validation_problems(error: ValidationError, provenance: Provenance) -> list[Problem]:
    problems = []
    # include_input=False: never echo a value, it may be a secret.
    for item in error.errors(include_input=False, include_url=False):
        loc: SettingPath = tuple(item["loc"])
        if not loc and "listed twice" in item["msg"]:
            continue  # reported per entry by _accounts_listed_twice
        setting = dotted(loc) or "settings"
        kind = item["type"]
        if kind == "missing":
            fix = _where_to_set(loc, provenance, secret=_is_secret(loc))
        elif kind == "extra_forbidden":
            fix = (
                f"remove it from {_where(provenance.origin(loc))}, or correct its spelling "
                f"({_REFERENCE} lists every setting)"
            )
        else:
            fix = (
                f"change it in {_where(provenance.origin(loc))} ({_REFERENCE} gives its type "
                "and limits)"
            )
        problems.append(Problem(setting, item["msg"], fix))
    return problems


def _where(origin: Origin | None) -> str:
    if origin is None or origin.kind in ("default", "derived"):
        return "the settings"
    if origin.kind == "file":
        return f"the settings file {origin.name}"
    if origin.kind == "env":
        return f"the environment variable {origin.name}"
    return f"the {origin}"


def _where_to_set(loc: SettingPath, provenance: Provenance, *, secret: bool) -> str:
    entry = next((i for i, key in enumerate(loc) if isinstance(key, int)), None)
    if entry is not None:
        return f"add it to {dotted(loc[: entry + 1])} in {_where(provenance.origin(loc[:entry]))}"
    if secret:
        return f"set {env_name(loc)} in the environment (a secret: never in the settings file)"
    section = f"[{dotted(loc[:-1])}] of " if len(loc) > 1 else ""
    return f"set {loc[-1]} in {section}the settings file, or {env_name(loc)} in the environment"


def _is_secret(loc: SettingPath) -> bool:
    """Return whether the setting at ``loc`` is a secret (a ``SecretStr``)."""
    from pydantic import BaseModel, SecretStr

    from tradebridge.config import Settings

    model: type[BaseModel] | None = Settings
    kinds: set[object] = set()
    for key in loc:
        if isinstance(key, int):
            continue
        info = model.model_fields.get(key) if model is not None else None
        if info is None:
            return False
        kinds = set(_types_in(info.annotation))
        model = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
    return SecretStr in kinds


def _types_in(annotation: object) -> list[object]:
    found = [annotation]
    for arg in get_args(annotation):
        found += _types_in(arg)
    return found


# --- what a worker would only find at start -------------------------------------------------


def start_up_problems(settings: Settings, provenance: Provenance) -> list[Problem]:
    """Return what ``serve`` would refuse, and warnings of what would fail later."""
    from tradebridge.intake.security import validate_webhook_settings

    problems = _tradovate_problems(settings, provenance)
    if settings.webhook.enabled:
        try:
            validate_webhook_settings(settings)
        except ConfigError as e:
            named = re.match(r"webhook\.[\w.]+", str(e))
            problems.append(Problem(named.group(0) if named else "webhook", str(e)))
    problems += _token_problems(settings)
    problems += _account_references(settings)
    return problems


def _tradovate_problems(settings: Settings, provenance: Provenance) -> list[Problem]:
    from tradebridge.runtime.live import LIVE_NOT_CONFIRMED, require_live_confirmed

    problems = []
    try:
        require_live_confirmed(settings)
    except ConfigError as e:
        # Unconfirmed, or confirmed with a risk rail undefined for an account.
        setting = "tradovate.confirm_live" if str(e) == LIVE_NOT_CONFIRMED else "risk"
        problems.append(Problem(setting, str(e)))
    return problems + _host_problems(settings, provenance)


def _token_problems(settings: Settings) -> list[Problem]:
    from tradebridge.brokers.factory import is_self_managed

    problems = []
    for index, account in enumerate(settings.accounts):
        try:
            if is_self_managed(settings, account) or settings.redis.url is not None:
                continue
            user = settings.login_of(account)
        except ConfigError as e:
            problems.append(Problem(f"accounts[{index}]", str(e)))
            continue
        if user is None:
            why = "no configured Tradovate user ([[users]]) logs in for it"
            fix = "add a [[users]] entry for its user (tradebridge init writes one)"
        else:
            why = f"its user {user.name} has no password here ({user.password_variable})"
            fix = f"set {user.password_variable} in the environment or tradebridge.env"
        key = settings.token_key(account.name)
        problems.append(
            Problem(
                f"accounts[{index}]",
                f"{account.name} ({account.dialect.value}) has no way to get a token: {why}, "
                f"and no redis.url (the embedded Redis starts empty; nothing writes {key})",
                f"{fix}, or set REDIS_URL to the Redis your token service writes",
                warning=True,
            )
        )
    if settings.tokens.native is not None and (
        not settings.tokens.native.cid or not settings.tokens.native.sec.get_secret_value()
    ):
        problems.append(
            Problem(
                "tokens.native",
                "no API key (cid and sec): Tradovate refuses a native login without one "
                '("The app is not registered", docs/tradovate.md)',
                "set tokens.native.cid and TRADEBRIDGE_TOKENS__NATIVE__SEC",
                warning=True,
            )
        )
    return problems


def _account_references(settings: Settings) -> list[Problem]:
    names = {a.name for a in settings.accounts}
    if not names:
        return [
            Problem(
                "accounts",
                "no [[accounts]]: serve has no account to place orders on (up uses the "
                "simulator's)",
                "add an [[accounts]] entry per Tradovate account (see tradebridge.example.toml)",
                warning=True,
            )
        ]
    known = ", ".join(sorted(names))
    problems = []
    hook = settings.webhook
    if hook.default_account is not None and hook.default_account not in names:
        problems.append(
            Problem(
                "webhook.default_account",
                f"{hook.default_account} is not a configured account ({known}): alerts "
                "without an account would be denied",
                "name one of the [[accounts]], or add it",
                warning=True,
            )
        )
    for group_name, members in hook.groups.items():
        for member in members:
            account = member if isinstance(member, str) else member.account
            if account not in names:
                problems.append(
                    Problem(
                        f"webhook.groups.{group_name}",
                        f"{account} is not a configured account ({known})",
                        "name one of the [[accounts]], or add it",
                        warning=True,
                    )
                )
    return problems


def _host_problems(settings: Settings, provenance: Provenance) -> list[Problem]:
    cfg = settings.tradovate
    # What the settings corrected themselves (a bare native host gets /v1).
    problems = [Problem("tradovate.native_url", note, warning=True) for note in cfg.notes]
    urls = {"native_url": cfg.native_url, "bridge_url": cfg.bridge_url}
    for name, url in urls.items():
        if provenance.origin(("tradovate", name)) is None:
            continue  # derived from environment: right by construction
        shown = mask_secret_url(url)
        if name == "native_url" and not url.endswith("/v1"):
            problems.append(
                Problem(
                    f"tradovate.{name}",
                    f"{shown} does not end in /v1: every native request would get HTTP 404",
                    "append /v1, or leave it unset to follow tradovate.environment",
                    warning=True,
                )
            )
        if name == "bridge_url" and url.endswith("/v1"):
            problems.append(
                Problem(
                    f"tradovate.{name}",
                    f"{shown} ends in /v1: the TradingView bridge has no /v1",
                    "remove /v1, or leave it unset to follow tradovate.environment",
                    warning=True,
                )
            )
        other = "demo" if cfg.environment.value == "live" else "live"
        if re.search(rf"(^|[/.-]){other}\.tradovateapi\.com", url):
            problems.append(
                Problem(
                    f"tradovate.{name}",
                    f"{shown} is a {other} host but tradovate.environment is "
                    f"{cfg.environment.value}: tokens and accounts never cross between them",
                    "leave it unset to follow tradovate.environment",
                    warning=True,
                )
            )
    return problems


# --- the summary ----------------------------------------------------------------------------


def summary(settings: Settings, provenance: Provenance) -> str:
    """Return the one-paragraph summary ``config check`` prints for good settings."""
    from tradebridge.runtime.live import is_live

    cfg = settings.tradovate
    where = (
        f"settings file {provenance.config_file}"
        if provenance.config_file
        else "no settings file, defaults and the environment"
    )
    parts = [f"Settings OK ({where})."]
    if is_live(settings):
        parts.append(
            "Environment: LIVE, orders trade real money (confirmed by tradovate.confirm_live)."
        )
    else:
        parts.append("Environment: demo.")
    dialects = sorted({a.dialect.value for a in settings.accounts})
    hosts = []
    if "native" in dialects:
        hosts.append(f"native {mask_secret_url(cfg.native_url)}")
    if "tvbridge" in dialects:
        hosts.append(f"tvbridge {mask_secret_url(cfg.bridge_url)}")
    parts.append(f"Dialects: {', '.join(hosts)}." if hosts else "Dialects: none.")
    if settings.accounts:
        listed = ", ".join(_account_text(settings, a) for a in settings.accounts)
        parts.append(f"{len(settings.accounts)} account(s): {listed}.")
        parts.append(f"Tokens: {'; '.join(_token_text(settings, a) for a in settings.accounts)}.")
    else:
        parts.append("No accounts.")
    parts.append(f"Database: {_store_text(settings, provenance, 'database', 'PostgreSQL')}.")
    parts.append(f"Redis: {_store_text(settings, provenance, 'redis', 'Redis')}.")
    hook = settings.webhook
    if not hook.enabled:
        parts.append("Webhook: off (webhook.enabled = false).")
    elif hook.secret is not None and hook.secret.get_secret_value():
        parts.append("Webhook: on, secret set.")
    else:
        parts.append("Webhook: on without a secret (local tests only).")
    return " ".join(parts)


def _account_text(settings: Settings, account: AccountConfig) -> str:
    from tradebridge.brokers.factory import token_user

    user = token_user(settings, account)
    return f"{account.name} ({account.dialect.value}, user {user or 'not named'})"


def _token_text(settings: Settings, account: AccountConfig) -> str:
    from tradebridge.brokers.factory import is_self_managed, token_user

    if is_self_managed(settings, account):
        user = token_user(settings, account)
        listed = any(u.name == user and u.dialect is account.dialect for u in settings.users)
        section = "[users]" if listed else f"tokens.{_CREDENTIALS[account.dialect]}"
        return f"{account.name}: tradebridge logs in as {user} ([{section}])"
    key = settings.token_key(account.name)
    return f"{account.name}: read from Redis under {key}, kept fresh by a token service"


def _store_text(settings: Settings, provenance: Provenance, section: str, what: str) -> str:
    url = settings.database.url if section == "database" else settings.redis.url
    if url is None:
        return f"embedded {what} under {settings.data_dir}"
    origin = provenance.origin((section, "url"))
    source = f" (from {origin.name})" if origin is not None and origin.name else ""
    return mask_secret_url(url.get_secret_value()) + source


# --- the commands ---------------------------------------------------------------------------


def _print_problems(problems: list[Problem]) -> None:
    for problem in sorted(problems, key=lambda p: p.warning):
        for line in problem.lines():
            out.print(line)


def _refuse(inspection: Inspection) -> typer.Exit:
    count = len(inspection.errors)
    out.print(f"{count} problem{'s' if count != 1 else ''} in the settings:")
    _print_problems(inspection.problems)
    return typer.Exit(2)


@config_app.command(cls=ConfigCommand)
def check(ctx: typer.Context) -> None:
    """Validate the settings: a summary, or every problem with its fix (exit 2)."""
    inspection = inspect_settings(ConfigOptions.of(ctx).config)
    if inspection.errors or inspection.settings is None or inspection.provenance is None:
        raise _refuse(inspection)
    out.print(escape(summary(inspection.settings, inspection.provenance)))
    _print_problems(inspection.problems)


@config_app.command(cls=ConfigCommand)
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts")] = False,
) -> None:
    """Show every effective setting, secrets masked, and where it came from."""
    inspection = inspect_settings(ConfigOptions.of(ctx).config)
    settings, provenance = inspection.settings, inspection.provenance
    if settings is None or provenance is None:
        raise _refuse(inspection)
    entries = provenance.entries(settings)
    if as_json:
        document = {
            "config_file": str(provenance.config_file) if provenance.config_file else None,
            "settings": [
                {"setting": e.setting, "value": e.value, **e.origin.as_json()} for e in entries
            ],
        }
        typer.echo(json.dumps(document, indent=2))
        return
    if provenance.config_file:
        typer.echo(f"# settings file: {provenance.config_file}")
    else:
        typer.echo("# no settings file: defaults and the environment")
    values = [json.dumps(e.value) for e in entries]
    width = max(len(e.setting) for e in entries)
    value_width = min(max(len(v) for v in values), 40)
    for entry, value in zip(entries, values, strict=True):
        typer.echo(f"{entry.setting:<{width}}  {value:<{value_width}}  {entry.origin}")


class SchemaFormat(enum.StrEnum):
    """What ``config schema`` prints."""

    JSON = "json"
    MARKDOWN = "markdown"


@config_app.command()
def schema(
    output: Annotated[
        SchemaFormat,
        typer.Option("--format", help="json: the JSON schema; markdown: docs/configuration.md"),
    ] = SchemaFormat.JSON,
) -> None:
    """Print the settings' JSON schema, or the markdown reference (docs/configuration.md)."""
    from tradebridge.cli._reference import reference_markdown
    from tradebridge.config import Settings

    if output is SchemaFormat.MARKDOWN:
        typer.echo(reference_markdown(), nl=False)
    else:
        typer.echo(json.dumps(Settings.model_json_schema(), indent=2))
