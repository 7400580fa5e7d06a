"""What ``tradebridge init`` does once it has its answers (the questions are cli/init.py's).

It logs each Tradovate user in with the managers the workers use (brokers/auth.py): with a
Redis, ``login`` (the user's lockout, its login cap, its lock); without one, ``check_login``
(one login that proves the credentials). It lists the user's accounts (native
``/account/list``, bridge ``/accounts``), renders ``tradebridge.toml`` (``[tradovate]``,
``[[users]]``, ``[[accounts]]``: no secret) and the secrets file (mode 0600, merged into an
existing one), stores the first tokens under the chosen accounts' keys and runs the doctor
on the written configuration. Secrets never reach the TOML, the output or the logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.exceptions import RedisError

from tradebridge.brokers.auth import BridgeTokenManager, SelfManaged, TokenManager
from tradebridge.brokers.base import AccountInfo
from tradebridge.brokers.http import RequestBudget, http_for
from tradebridge.brokers.listing import user_accounts
from tradebridge.config import (
    ENV_FILE_NAME,
    BridgeCredentials,
    NativeCredentials,
    RedisConfig,
    TokenConfig,
    TradovateConfig,
    format_env_value,
    load_device_id,
    load_settings,
    read_env_file,
    user_variable,
)
from tradebridge.doctor.diagnosis import DoctorReport, run_doctor
from tradebridge.domain.enums import Dialect, Environment
from tradebridge.errors import ConfigError
from tradebridge.obs.logging import get_logger, mask_url
from tradebridge.store.tokens import StoredToken, TokenStore, connect_redis

_log = get_logger("tradebridge.runtime.setup")

DEFAULT_APP_ID = "tradebridge"


@dataclass(frozen=True, slots=True)
class NewUser:
    """One Tradovate login as ``init`` was given it; its repr never shows a secret."""

    name: str
    password: SecretStr = field(repr=False)
    sec: SecretStr = field(default=SecretStr(""), repr=False)
    cid: int = 0
    app_id: str = DEFAULT_APP_ID

    def variables(self, dialect: Dialect) -> dict[str, str]:
        """Return the secrets file's variables of this user (the names the TOML implies)."""
        found = {user_variable(self.name, "PASSWORD"): self.password.get_secret_value()}
        if dialect is Dialect.NATIVE and self.sec.get_secret_value():
            found[user_variable(self.name, "SEC")] = self.sec.get_secret_value()
        return found


@dataclass(frozen=True, slots=True)
class Target:
    """Where the users log in: the environment, the dialect and the hosts (None: derived)."""

    environment: Environment
    dialect: Dialect
    native_url: str | None = None
    bridge_url: str | None = None

    def tradovate(self) -> TradovateConfig:
        """Return the ``[tradovate]`` section these answers give."""
        given: dict[str, Any] = {"environment": self.environment}
        if self.native_url:
            given["native_url"] = self.native_url
        if self.bridge_url:
            given["bridge_url"] = self.bridge_url
        return TradovateConfig.model_validate(given)


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """A user logged in: its token (never shown) and the accounts Tradovate lists for it."""

    user: NewUser
    token: StoredToken = field(repr=False)
    accounts: tuple[AccountInfo, ...]


class Setup:
    """Logins and token writes of one ``init`` run (``async with Setup(...)``)."""

    def __init__(self, target: Target, *, data_dir: Path, redis_url: str | None) -> None:
        self.target = target
        self.data_dir = data_dir
        self.redis_config = RedisConfig(url=SecretStr(redis_url) if redis_url else None)
        self.redis: aioredis.Redis | None = None
        self.reachable = False
        self.tradovate = target.tradovate()
        self.budget = RequestBudget(self.tradovate)
        self._stack = contextlib.AsyncExitStack()

    @property
    def redis_url(self) -> str:
        """Return the Redis URL used, its password masked."""
        url = self.redis_config.url
        return mask_url(url.get_secret_value()) if url else "redis://127.0.0.1:6379/0"

    async def __aenter__(self) -> Self:
        self.redis = connect_redis(self.redis_config.model_copy(update={"socket_timeout_s": 2.0}))
        self._stack.push_async_callback(self.redis.aclose)
        try:
            await self.redis.ping()
            self.reachable = True
        except (RedisError, OSError):
            self.reachable = False
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _store(self) -> TokenStore:
        assert self.redis is not None
        return TokenStore(self.redis, TokenConfig())

    def _manager(self, user: NewUser) -> SelfManaged:
        cfg = self.tradovate
        http = http_for(cfg, self.target.dialect.value, budget=self.budget)
        if self.target.dialect is Dialect.TVBRIDGE:
            login = BridgeCredentials(login=user.name, password=user.password)
            return BridgeTokenManager(
                self._store(), http, login, account_names=[],
                environment=cfg.environment.value, retry=cfg.retry,
            )  # fmt: skip
        native = NativeCredentials(
            name=user.name, password=user.password, app_id=user.app_id, cid=user.cid,
            sec=user.sec,
        )  # fmt: skip
        return TokenManager(
            self._store(), http, native, device_id=load_device_id(self.data_dir),
            account_names=[], environment=cfg.environment.value, retry=cfg.retry,
        )  # fmt: skip

    async def log_in(self, user: NewUser) -> LoggedIn:
        """Log ``user`` in and list its accounts; ``LoginFailed`` and co. say why not."""
        manager = self._manager(user)
        try:
            token = await (manager.login() if self.reachable else manager.check_login())
            accounts = await user_accounts(manager.http, self.target.dialect, token, user=user.name)
        finally:
            await manager.aclose()
        return LoggedIn(user, token, tuple(accounts))

    async def store_tokens(self, logged: LoggedIn, accounts: Sequence[str]) -> list[str]:
        """Write the user's token under the chosen accounts' keys (nothing without Redis)."""
        if not self.reachable or not accounts:
            return []
        store = self._store()
        return await store.write([store.key_for(name) for name in accounts], logged.token)


# --- the files ------------------------------------------------------------------------------


def _toml(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def render_config(
    target: Target,
    chosen: Sequence[tuple[NewUser, Sequence[AccountInfo]]],
    *,
    confirm_live: bool,
    env_file: str | None = None,
    data_dir: Path | None = None,
) -> str:
    """Return the text of ``tradebridge.toml`` for these users and accounts (no secret)."""
    where = env_file or ENV_FILE_NAME
    lines = [
        f"# Written by `tradebridge init` on {datetime.now(UTC):%Y-%m-%d}; docs/tradovate.md",
        f"# explains each entry. Passwords and API secrets are in {where} (mode 0600).",
        "",
    ]
    if env_file:
        lines.append(f"env_file = {_toml(env_file)}")
    if data_dir is not None:
        lines.append(f"data_dir = {_toml(str(data_dir))}")
    if env_file or data_dir is not None:
        lines.append("")
    lines += ["[tradovate]", f"environment = {_toml(target.environment.value)}"]
    if target.environment is Environment.LIVE:
        lines.append(f"confirm_live = {_toml(confirm_live)}  # real money: a deliberate choice")
    if target.native_url:
        lines.append(f"native_url = {_toml(target.native_url)}")
    if target.bridge_url:
        lines.append(f"bridge_url = {_toml(target.bridge_url)}")
    for user, _accounts in chosen:
        lines += ["", "[[users]]", f"name = {_toml(user.name)}",
                  f"dialect = {_toml(target.dialect.value)}"]  # fmt: skip
        lines.append(f"# password: {user_variable(user.name, 'PASSWORD')} in {where}")
        if target.dialect is Dialect.NATIVE:
            sec = user_variable(user.name, "SEC")
            lines.append(
                f"# API secret: {sec} in {where}"
                if user.sec.get_secret_value()
                else f"# API secret: none given; set {sec} in {where} (Tradovate requires one)"
            )
            lines += [f"cid = {_toml(user.cid)}", f"app_id = {_toml(user.app_id)}"]
    for user, accounts in chosen:
        for account in accounts:
            lines += ["", "[[accounts]]", f"name = {_toml(account.name)}",
                      f"dialect = {_toml(target.dialect.value)}"]  # fmt: skip
            if account.native_id is not None:
                lines.append(f"native_id = {_toml(account.native_id)}")
            if account.bridge_id is not None:
                lines.append(f"bridge_id = {_toml(account.bridge_id)}")
            lines.append(f"user = {_toml(user.name)}")
    if target.environment is Environment.LIVE:
        # The workers refuse to start on live until these are defined (runtime/live.py).
        lines += [
            "",
            '# Live accounts need these risk rails defined, a value or "off" on purpose,',
            "# before the workers start (docs/risk.md):",
            "[risk]",
            '# allowed_roots = ["MNQ", "MES"]',
            "# daily_loss_limit = 500",
            '# trailing_drawdown = "off"',
        ]
    return "\n".join(lines) + "\n"


def write_config(path: Path, text: str, *, force: bool) -> None:
    """Write the TOML file (it holds no secret); ``ConfigError`` if it exists without force."""
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to replace it")
    _replace(path, text, 0o644)


def write_secrets(path: Path, variables: dict[str, str]) -> None:
    """Set ``variables`` in the secrets file (mode 0600), keeping its other lines.

    ``ConfigError`` if an existing file is open to group or others (``read_env_file``).
    """
    read_env_file(path)  # refuses a file others may read; we would not add secrets to it
    try:
        old = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        old = [
            "# tradebridge's secrets, read at start (variables already in the environment win);",
            "# also usable as systemd EnvironmentFile= and compose env_file:. Keep it mode 0600.",
        ]
    pending = dict(variables)
    lines = []
    for line in old:
        key = line.split("=", 1)[0].strip().removeprefix("export ").strip()
        if "=" in line and key in pending:
            lines.append(f"{key}={format_env_value(pending.pop(key))}")
        else:
            lines.append(line)
    lines += [f"{key}={format_env_value(value)}" for key, value in pending.items()]
    _replace(path, "\n".join(lines) + "\n", 0o600)


def _replace(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` atomically, the file created with ``mode`` from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- the check ------------------------------------------------------------------------------


async def run_checks(
    config: Path, accounts: Sequence[str], *, redis_url: str | None
) -> list[DoctorReport]:
    """Load the written configuration and run the doctor on each account."""
    overrides: dict[str, Any] = {"redis": {"url": redis_url}} if redis_url else {}
    settings = load_settings(config, **overrides)
    redis = connect_redis(settings.redis)
    try:
        store = TokenStore(redis, settings.tokens, key_for=settings.token_key)
        return [await run_doctor(settings, store, name) for name in accounts]
    finally:
        await redis.aclose()
