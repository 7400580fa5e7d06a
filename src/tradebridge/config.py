"""One typed settings tree: a TOML file plus environment variables.

Sources, strongest first: keyword arguments, ``TRADEBRIDGE_...`` variables (nested with
``__``, e.g. ``TRADEBRIDGE_TRADOVATE__ENVIRONMENT=live``), the conventional
``DATABASE_URL`` and ``REDIS_URL``, the TOML file (``tradebridge.toml``, or the path in
``TRADEBRIDGE_CONFIG``), then defaults. Secrets belong in the environment, or in the secrets
file (``tradebridge.env`` beside the TOML file, or ``TRADEBRIDGE_ENV_FILE``): KEY=VALUE lines
read at load as if they were in the environment (variables already there win), refused if
group or others may read it. The same file serves as systemd's ``EnvironmentFile=`` and
compose's ``env_file:``. ``[[users]]`` name their passwords by variable, never in the TOML.
``redacted()`` prints the effective settings with every secret masked (``tradebridge config
check``).
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from tradebridge.domain.contracts import RollCalendar
from tradebridge.domain.enums import Dialect, Environment
from tradebridge.domain.notices import NoticeKind
from tradebridge.domain.products import PRODUCTS
from tradebridge.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("tradebridge.toml")
ENV_FILE_NAME = "tradebridge.env"
"""The secrets file's name; it lives beside the configuration file unless set elsewhere."""
_NATIVE_URLS = {
    Environment.DEMO: "https://demo.tradovateapi.com/v1",
    Environment.LIVE: "https://live.tradovateapi.com/v1",
}
_BRIDGE_URLS = {
    Environment.DEMO: "https://tv-demo.tradovateapi.com",
    Environment.LIVE: "https://tv-live.tradovateapi.com",
}
_config_file: ContextVar[Path | None] = ContextVar("tradebridge_config_file", default=None)
# The environment a Settings is built from (the secrets file under the process environment),
# set for the duration of one construction.
_environ: ContextVar[Mapping[str, str] | None] = ContextVar("tradebridge_environ", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryConfig(_Section):
    """Retries of reads, cancels, logins and connects (never of a submit)."""

    enabled: bool = Field(True, description="off: every read, cancel and login is tried once")
    attempts: int = Field(5, ge=1, description="cap on attempts, the first included")
    timeout_s: float = Field(30.0, gt=0, description="cap on the total time spent retrying")
    wait_initial_s: float = Field(0.2, ge=0, description="first wait; each next one doubles")
    wait_max_s: float = Field(5.0, ge=0, description="cap on one wait")
    wait_jitter_s: float = Field(0.5, ge=0, description="random extra wait, up to this")


class EventNamesConfig(_Section):
    """The strings of WebSocket ``props`` events; the reference marks them unverified (§8.7)."""

    order: str = Field("order", description="entityType of order events")
    order_version: str = Field("orderVersion", description="entityType of order version events")
    execution_report: str = Field("executionReport", description="entityType of execution reports")
    fill: str = Field("fill", description="entityType of fills")
    position: str = Field("position", description="entityType of position changes")
    command: str = Field("command", description="entityType of commands")
    order_strategy: str = Field("orderStrategy", description="entityType of order strategies")
    order_strategy_link: str = Field(
        "orderStrategyLink", description="entityType of order strategy links"
    )
    created: str = Field("Created", description="eventType of a new entity")
    updated: str = Field("Updated", description="eventType of a changed entity")
    deleted: str = Field("Deleted", description="eventType of a removed entity")


class StrategyConfig(_Section):
    """Brackets placed as Tradovate order strategies (reference §5.8; much of it unverified)."""

    use: Literal["relative", "never"] = Field(
        "relative",
        description="relative: an entry whose bracket legs are all distances (ticks, points, "
        "dollars) starts the built-in Bracket strategy, so Tradovate prices the legs from the "
        "real fill; legs at absolute prices still go as placeoso. never: every bracket goes as "
        "placeoso, distances priced at submit from the entry reference",
    )
    type_id: int = Field(2, ge=1, description="orderStrategyTypeId of the Bracket strategy")
    units: Literal["points", "ticks"] = Field(
        "points",
        description="what profitTarget / stopLoss in the params mean: price points from the "
        "entry (the reference's example suggests it) or ticks; unverified",
    )
    breakeven_key: str = Field(
        "breakeven",
        description="the key (value true) of a bracket whose stop moves to the fill once "
        "another bracket's target filled (unverified)",
    )
    entry_label: str = Field(
        "Entry",
        description="orderStrategyLink label of the entry order; when no link carries it, "
        "the strategy's first order is the entry (unverified)",
    )


class TradovateConfig(_Section):
    """Where and how to reach Tradovate; every host follows from ``environment``."""

    environment: Environment = Field(
        Environment.DEMO,
        description="demo or live: picks every host; live also needs confirm_live",
    )
    confirm_live: bool = Field(
        False,
        description="required with environment = live: trading real money is a deliberate choice",
    )
    native_url: str = Field("", description="native REST base incl. /v1; derived if empty")
    bridge_url: str = Field("", description="TradingView bridge base; derived if empty")
    ws_url: str = Field("", description="user WebSocket; derived from native_url if empty")
    request_timeout_s: float = Field(10.0, gt=0, description="cap on one broker request")
    connect_timeout_s: float = Field(5.0, gt=0, description="cap on opening a connection")
    # Client-side budget per Tradovate user (reference §7): sliding windows kept inside the
    # documented (1,000/s, 5,000/min, 5,000/h) and field-reported (80/min and 5,000/h
    # counting orders) limits, with a margin; orders go ahead of reads (brokers/budget.py).
    requests_per_second: int = Field(
        50,
        ge=1,
        description="requests of any kind a user may send in any rolling second (documented "
        "1,000/s); at least the largest fan-out, so its orders leave together",
    )
    requests_per_hour: int = Field(
        4500,
        ge=1,
        description="requests of any kind a user may send in any rolling hour (documented and "
        "field-reported 5,000/h, less a 10 % margin)",
    )
    orders_per_minute: int = Field(
        72,
        ge=1,
        description="orders (place, modify, cancel, liquidate, strategies) a user may send in "
        "any rolling minute (field-reported 80/min, less a 10 % margin)",
    )
    reads_per_minute: int = Field(
        50,
        ge=1,
        description="reads a user may send in any rolling minute: 3,000/h at most, so reads "
        "alone never use up requests_per_hour and orders keep at least 1,500/h",
    )
    reads_reserved_per_minute: int = Field(
        20,
        ge=0,
        description="of reads_per_minute, the reads that reconcile and the tracker leave "
        "for the reads an order waits for (an account list, a position before the user-sync "
        "socket is up): after a restart with many open rows, their look-ups use the rest and "
        "a new alert's reads still go at once; at most reads_per_minute - 1",
    )
    # Tradovate counts per user, whichever process sends (§7): the windows are shared through
    # Redis unless a single process runs (brokers/redis_budget.py).
    budget: Literal["redis", "local"] = Field(
        "redis",
        description="redis: the windows above are shared by every process using the same "
        "Redis (serve workers on any host, tokens serve, the broker commands of the CLI), "
        "counted per Tradovate user; local: each process has the whole budget to itself (one "
        "process only: N processes would send N times the limits)",
    )
    budget_redis_timeout_s: float = Field(
        0.5,
        gt=0,
        description="cap on one admission round trip to Redis; a slower or failed one counts "
        "Redis as unreachable for the budget (budget_on_redis_error) during "
        "budget_redis_retry_s",
    )
    budget_redis_retry_s: float = Field(
        2.0, gt=0, description="while Redis is unreachable, how often the budget tries it again"
    )
    budget_on_redis_error: Literal["local", "refuse"] = Field(
        "local",
        description="Redis unreachable: local admits from this process's share of each window "
        "(the limit divided by the processes last seen using the user, at least "
        "budget_fallback_processes, less their share of what was used; charged to Redis when it "
        "is back); refuse sends nothing (BrokerUnavailable) until Redis answers",
    )
    budget_fallback_processes: int = Field(
        2,
        ge=1,
        description="while Redis is unreachable, assume at least this many processes share "
        "each Tradovate user (more if Redis last showed more)",
    )
    device_id: str | None = Field(None, description="override; normally generated once")
    app_version: str = Field("1.0", description="not used: logins send their own")
    retry: RetryConfig = Field(default_factory=RetryConfig)
    ws_heartbeat_s: float = Field(2.5, gt=0, description="user WebSocket heartbeat interval")
    ws_dead_after_s: float = Field(10.0, gt=0, description="no frame this long: reconnect")
    ws_reconnect_max_s: float = Field(30.0, gt=0, description="longest wait between reconnects")
    positions_from_sync: bool = Field(
        True,
        description="read an account's positions (and the risk rules its working orders) from "
        "the user-sync socket when it is current for the account (no fill newer than its "
        "position update, every order sent there final), instead of a budgeted REST read; "
        "false: always REST",
    )
    sync_start_wait_s: float = Field(
        2.0,
        ge=0,
        description="for this long after a worker starts its user-sync sockets, a position "
        "read waits for the first snapshot rather than reading REST (a fan-out right after a "
        "restart: one read per account, budgeted); 0: never wait",
    )
    sync_blind_s: float = Field(
        30.0,
        ge=0,
        description="after a send to an account whose answer was lost or failed, read its "
        "positions from REST (not the socket) for this long",
    )
    event_names: EventNamesConfig = Field(default_factory=EventNamesConfig)
    strategies: StrategyConfig = Field(default_factory=StrategyConfig)
    lookup_absent_after_s: float = Field(10.0, ge=0, description="reference §11.3 step 5")
    lookup_by_shape: Literal["review", "adopt"] = Field(
        "review",
        description="a lost submit's lookup finds no clOrdId of ours but one new order of the "
        "same shape and bracket WITHOUT any clOrdId (placed by hand, or Tradovate dropped ours): "
        "leave the row for review (needs_review), or adopt it flagged (reference §11.3 step 4)",
    )

    # Whether the settings say where Tradovate is (environment or a URL given), or only
    # the built-in demo default does; and what validation changed, for a warning.
    _located: bool = PrivateAttr(default=False)
    _notes: tuple[str, ...] = PrivateAttr(default=())
    _derived: bool = PrivateAttr(default=False)

    @property
    def located(self) -> bool:
        """Return whether the settings name Tradovate's environment or a URL themselves."""
        return self._located

    @property
    def notes(self) -> tuple[str, ...]:
        """Return what validation changed in the given values (worth a warning)."""
        return self._notes

    @model_validator(mode="before")
    @classmethod
    def _budget_from_bucket(cls, data: Any) -> Any:
        """Translate the old token bucket (``requests_per_s``, ``request_burst``) to windows.

        Each window gets at least what the bucket allowed in its span (rate * span + burst),
        so a setting that raised the bucket still raises every window.
        """
        if not isinstance(data, dict) or not ({"requests_per_s", "request_burst"} & set(data)):
            return data
        data = dict(data)
        rate = float(data.pop("requests_per_s", 1.0))
        burst = int(data.pop("request_burst", 5))
        spans = {"requests_per_second": 1, "requests_per_hour": 3600,
                 "orders_per_minute": 60, "reads_per_minute": 60}  # fmt: skip
        for name, span in spans.items():
            data.setdefault(name, max(1, math.ceil(rate * span) + burst))
        return data

    @model_validator(mode="after")
    def _derive_urls(self) -> TradovateConfig:
        if self._derived:  # a default instance is validated again (validate_default)
            return self
        self._derived = True
        self._located = bool(
            "environment" in self.model_fields_set or self.native_url or self.bridge_url
        )
        if self.native_url:
            self.native_url, self._notes = _with_rest_path(self.native_url)
        else:
            self.native_url = _NATIVE_URLS[self.environment]
        if not self.bridge_url:
            self.bridge_url = _BRIDGE_URLS[self.environment]
        self.native_url = self.native_url.rstrip("/")
        self.bridge_url = self.bridge_url.rstrip("/")
        if not self.ws_url:
            self.ws_url = websocket_url(self.native_url)
        return self


class TvBridgeConfig(_Section):
    """How the TradingView-bridge adapter behaves where the reference is unverified (§9)."""

    bid_ask: Literal["always", "never", "when_required"] = Field(
        "always",
        description="send currentBid/currentAsk (read from /quotes) on every order, never, or "
        "on market orders only (when_required); observed required on tv-demo market orders (§9.7)",
    )
    flatten: Literal["auto", "close_position", "market_order"] = Field(
        "auto",
        description="flatten by DELETE /positions/{id} where /accounts says "
        "supportClosePosition (auto), always that way, or always by an opposite-side market "
        "order (§9.8)",
    )
    poll_interval_s: float = Field(1.0, gt=0, description="how often /orders is polled")
    lookup_absent_after_s: float | None = Field(
        None, ge=0, description="lookup window; None: tradovate.lookup_absent_after_s"
    )
    lookup_poll_s: float = Field(0.5, gt=0, description="how often a lookup reads /orders")
    lookup_slack_s: float = Field(2.0, ge=0, description="clock skew allowed by a lookup")
    lookup_baseline: bool = Field(
        True,
        description="read /orders and /ordersHistory before each submit, so a lost answer's "
        "order can be proven new; off: a same-shape order without creation time leaves the row "
        "for review",
    )
    cache_ttl_s: float = Field(300.0, ge=0, description="accounts, instruments")
    history_max_count: int = Field(200, ge=1, description="maxCount of /ordersHistory")
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra headers, e.g. Origin (§9.11)"
    )


def _with_rest_path(native_url: str) -> tuple[str, tuple[str, ...]]:
    """Return the native REST base with ``/v1`` added to a bare host, and a note if added.

    Tradovate's native REST API lives under ``/v1`` (reference §1); a bare host answers every
    route with 404, which reads like an unknown account. A URL with any other path (a proxy's
    prefix) is left as given.
    """
    try:
        path = urlsplit(native_url).path
    except ValueError:
        return native_url, ()
    if path.strip("/"):
        return native_url, ()
    fixed = native_url.rstrip("/") + "/v1"
    note = (
        f"tradovate.native_url {native_url} has no path: using {fixed} "
        "(Tradovate's native REST API lives under /v1; add it to silence this warning)"
    )
    return fixed, (note,)


def websocket_url(native_url: str) -> str:
    """Derive the user WebSocket URL from the native REST base (``.../v1/websocket``)."""
    base = re.sub(r"^http", "ws", native_url.rstrip("/"))
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/websocket"


Off = Literal["off"]
"""A rule switched off on purpose (``"off"``): not a limit, and not undefined either."""
_Count = Annotated[int, Field(ge=1)]
_Money = Annotated[Decimal, Field(gt=0)]
_Ticks = Annotated[int, Field(ge=1)]

RISK_RAILS: tuple[str, ...] = ("allowed_roots", "daily_loss_limit", "trailing_drawdown")
"""The rules with no safe value for every account: undefined by default, and a live account
must have each defined (a value, or ``"off"`` on purpose) before anything starts."""


class RiskRules(_Section):
    """Pre-trade rules, one value each (docs/risk.md); ``"off"`` switches a rule off.

    In ``[risk]`` every field applies (with these defaults); in an account's ``risk`` table
    and in ``[risk.strategies.NAME]`` only the fields given there count, and they win over
    ``[risk]`` (a strategy's over its account's). Exits and other orders that only reduce
    the position pass every rule.
    """

    allowed_roots: list[str] | Off | None = Field(
        None,
        description='product roots that may be traded, e.g. ["MNQ", "MES"] (after '
        "webhook.symbol_map); unset: any known root, but a live account must set it (or "
        '"off")',
    )
    max_order_qty: _Count | Off = Field(
        10, description="contracts in one order (a safe ceiling for micro and mini futures)"
    )
    max_position: _Count | Off = Field(
        10, description="absolute net position per contract after the order"
    )
    max_account_position: _Count | Off = Field(
        20,
        description="sum over the account's contracts of the absolute net positions after "
        "the order",
    )
    max_open_orders: _Count | Off = Field(
        20,
        description="the account's rows at the broker and not done (submitted, working, "
        "partially filled, unknown, needs review), counted in the ledger",
    )
    max_orders_per_minute: _Count | Off = Field(
        30,
        description="orders sent for the account in the last 60 s (ledger): a runaway alert "
        "loop stops here",
    )
    max_orders_per_day: _Count | Off = Field(
        300, description="orders sent for the account in the trading day (ledger)"
    )
    daily_loss_limit: _Money | Off | None = Field(
        None,
        description="dollars the account may lose in the trading day, realized and open "
        "(from the broker's balance); once reached only orders that reduce a position pass. "
        'Unset: not checked, but a live account must set it (or "off")',
    )
    daily_profit_target: _Money | Off = Field(
        "off", description="dollars of the day's P&L after which new entries stop (optional)"
    )
    trailing_drawdown: _Money | Off | None = Field(
        None,
        description="dollars the balance may fall below its highest mark (the firm's "
        'trailing drawdown). Unset: not checked, but a live account must set it (or "off")',
    )
    trailing_mode: Literal["intraday", "eod"] = Field(
        "intraday",
        description="what the highest mark follows: the balance with open P&L as tradebridge "
        "sees it (intraday), or the balance at the start of each trading day (eod)",
    )
    trailing_start_balance: _Money | None = Field(
        None,
        description="the account's starting (or highest so far) balance: the mark never "
        "starts lower; unset: the first balance seen",
    )
    trailing_stop_balance: _Money | None = Field(
        None,
        description="the threshold stops trailing here (e.g. the starting balance + 100 for "
        "a 50K evaluation); unset: it trails without end",
    )
    trailing_margin: Annotated[Decimal, Field(ge=0)] = Field(
        Decimal(0),
        description="dollars kept between the balance and the firm's threshold: entries "
        "stop this much before it",
    )
    timezone: str = Field(
        "America/Chicago",
        description="the exchange's time zone: sessions, the close and the trading day's reset",
    )
    day_reset: time = Field(
        time(17, 0), description="when the trading day begins (daily loss, orders per day)"
    )
    trading_hours: Literal["cme", "always"] = Field(
        "cme",
        description="cme: entries only inside the CME Globex session (session_open to "
        "session_close, weekdays, no session on the roll calendar's holidays); always: no "
        "window",
    )
    session_open: time = Field(time(17, 0), description="the session opens (the evening before)")
    session_close: time = Field(time(16, 0), description="the session closes")
    no_entry_before_close_min: _Count | Off = Field(
        10, description="no new entries in the last minutes before session_close"
    )
    cooldown_s: Annotated[float, Field(gt=0)] | Off = Field(
        "off", description="seconds after an entry before the next entry on the same root"
    )
    min_stop_ticks: _Ticks | Off = Field(
        "off", description="an entry's stop loss at least this many ticks from the entry"
    )
    max_stop_ticks: _Ticks | Off = Field(
        "off", description="an entry's stop loss at most this many ticks from the entry"
    )
    require_stop_loss: bool = Field(False, description="refuse an entry without a stop loss")
    flatten_at: time | Off = Field(
        "off",
        description="flatten the account (cancel its working orders, close its positions) at "
        "this time of day in `timezone`, each business day, and refuse new entries from then "
        "until day_reset (e.g. 15:55 for firms that want you flat by 16:59 New York). Per "
        "account: not in [risk.strategies]",
    )
    flatten_on_loss: bool = Field(
        False,
        description="flatten the account once when its daily loss limit or trailing drawdown "
        "is reached (as tradebridge sees the balance: at entries and after fills). Per "
        "account: not in [risk.strategies]",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _off_lowercase(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "off":
            return "off"
        return value

    @field_validator("allowed_roots")
    @classmethod
    def _known_roots(cls, value: list[str] | str | None) -> list[str] | str | None:
        if not isinstance(value, list):
            return value
        roots = [root.strip().upper() for root in value]
        unknown = [root for root in roots if root not in PRODUCTS]
        if unknown:
            raise ValueError(f"unknown root(s) {', '.join(unknown)} (known: {', '.join(PRODUCTS)})")
        if not roots:
            raise ValueError('an empty list allows nothing; list roots, or "off"')
        return roots

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. America/Chicago)") from None
        return value

    def given(self) -> dict[str, Any]:
        """Return the fields this section sets itself (an override's effective part)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


ACCOUNT_WIDE_RULES = frozenset({"flatten_at", "flatten_on_loss"})
"""Rules that act on a whole account (a flatten), so a strategy cannot set its own."""


class RiskOverride(RiskRules):
    """Rules of one account or strategy (docs/risk.md): only the fields given here count, and
    they win over ``[risk]`` (a strategy's over its account's); the others are ``[risk]``'s.
    """

    defaults_from: ClassVar[str] = "[risk]"


class AccountConfig(_Section):
    """One account tradebridge trades, in one dialect."""

    name: str = Field(min_length=1, description="accountSpec, e.g. PAAPEX1361890000010")
    dialect: Dialect = Field(
        Dialect.NATIVE, description="native (API key) or tvbridge (the TradingView bridge)"
    )
    native_id: int | None = Field(None, description="numeric account id; looked up if unset")
    bridge_id: str | None = Field(
        None, description="the bridge's D... id of the account; looked up if unset"
    )
    user: str | None = Field(
        None,
        description="the Tradovate user whose token serves it: a [[users]] entry of the same "
        "dialect (tradebridge logs in), or any other name (its token is read from Redis); "
        "default: the only configured user of its dialect",
    )
    token_key: str | None = Field(None, description="overrides the token key template")
    risk: RiskOverride | None = Field(
        None,
        description="rules of this account: only the fields given override [risk] (docs/risk.md)",
    )


class NativeCredentials(_Section):
    """Self-managed native login (``auth/accesstokenrequest``)."""

    name: str = Field(description="the Tradovate username")
    password: SecretStr = Field(
        description="a secret: set it in the environment, never in the file"
    )
    app_id: str = Field("tradebridge", description="the API key's name (appId)")
    app_version: str = Field("1.0", description="appVersion sent with the login")
    cid: int = Field(0, description="the API key's ID (cid)")
    sec: SecretStr = Field(
        SecretStr(""),
        description="the API key's secret (a secret: the environment, never the file)",
    )


class BridgeCredentials(_Section):
    """Self-managed TradingView-bridge login (``POST /authorize``)."""

    login: str = Field(description="the Tradovate username")
    password: SecretStr = Field(
        description="a secret: set it in the environment, never in the file"
    )
    # §9.3: ``expiration`` is optional; without it (and without a JWT exp) assume this.
    assumed_lifetime_s: float = Field(
        15 * 60.0, gt=0, description="token lifetime when the answer gives no expiry (§9.3)"
    )


def user_variable(user: str, secret: str) -> str:
    """Return the default variable of a user's secret: ``TRADEBRIDGE_USER_<NAME>_<SECRET>``.

    The name is upper-cased and every character but A-Z and 0-9 becomes ``_``
    (``apex.trader-2`` → ``TRADEBRIDGE_USER_APEX_TRADER_2_PASSWORD``).
    """
    return f"TRADEBRIDGE_USER_{re.sub(r'[^A-Z0-9]', '_', user.upper())}_{secret}"


_NATIVE_ONLY = frozenset({"cid", "sec", "sec_env", "app_id", "app_version"})
_BRIDGE_ONLY = frozenset({"assumed_lifetime_s"})


class UserConfig(_Section):
    """One Tradovate login tradebridge logs in with itself (``[[users]]``).

    Its secrets are read from variables (the environment or the secrets file), named by
    ``password_env`` / ``sec_env`` or derived from the name. A user whose password is not
    set has no credentials here: its accounts read their token from Redis.
    """

    name: str = Field(min_length=1, description="the Tradovate user name (the login)")
    dialect: Dialect = Field(
        Dialect.NATIVE,
        description="native: auth/accesstokenrequest with an API key; tvbridge: the "
        "TradingView bridge's POST /authorize",
    )
    password_env: str | None = Field(
        None, description="variable holding the password; default TRADEBRIDGE_USER_<NAME>_PASSWORD"
    )
    password: SecretStr | None = Field(
        None,
        description="the password; filled from password_env at load (a literal one here is "
        "accepted for old files, never written)",
    )
    cid: int = Field(0, ge=0, description="native: the API key's id (cid)")
    sec_env: str | None = Field(
        None,
        description="native: variable holding the API secret; default TRADEBRIDGE_USER_<NAME>_SEC",
    )
    sec: SecretStr | None = Field(None, description="native: the API secret; filled from sec_env")
    app_id: str = Field("tradebridge", description="native: the API key's name (appId)")
    app_version: str = Field("1.0", description="native: appVersion")
    assumed_lifetime_s: float = Field(
        15 * 60.0, gt=0, description="tvbridge: token lifetime when /authorize gives none (§9.3)"
    )

    @model_validator(mode="after")
    def _fields_of_dialect(self) -> UserConfig:
        foreign = _BRIDGE_ONLY if self.dialect is Dialect.NATIVE else _NATIVE_ONLY
        wrong = sorted(self.model_fields_set & foreign)
        if wrong:
            other = "tvbridge" if self.dialect is Dialect.NATIVE else "native"
            verb = "applies" if len(wrong) == 1 else "apply"
            raise ValueError(
                f"user {self.name} ({self.dialect.value}): {', '.join(wrong)} {verb} only to "
                f"{other} users"
            )
        return self

    @property
    def password_variable(self) -> str:
        """Return the variable the password is read from."""
        return self.password_env or user_variable(self.name, "PASSWORD")

    @property
    def sec_variable(self) -> str:
        """Return the variable the API secret is read from (native users)."""
        return self.sec_env or user_variable(self.name, "SEC")

    def with_secrets(self, environ: Mapping[str, str]) -> UserConfig:
        """Return this user with its secrets read from ``environ`` (they win over literals)."""
        update: dict[str, SecretStr] = {}
        if password := environ.get(self.password_variable):
            update["password"] = SecretStr(password)
        if self.dialect is Dialect.NATIVE and (sec := environ.get(self.sec_variable)):
            update["sec"] = SecretStr(sec)
        return self.model_copy(update=update) if update else self

    def credentials(self) -> NativeCredentials | BridgeCredentials | None:
        """Return the login of this user, or None when its password is not set."""
        if self.password is None or not self.password.get_secret_value():
            return None
        if self.dialect is Dialect.TVBRIDGE:
            return BridgeCredentials(
                login=self.name,
                password=self.password,
                assumed_lifetime_s=self.assumed_lifetime_s,
            )
        return NativeCredentials(
            name=self.name,
            password=self.password,
            app_id=self.app_id,
            app_version=self.app_version,
            cid=self.cid,
            sec=self.sec or SecretStr(""),
        )

    @classmethod
    def from_credentials(cls, credentials: NativeCredentials | BridgeCredentials) -> UserConfig:
        """Return the user of a ``[tokens.native]`` / ``[tokens.bridge]`` section."""
        if isinstance(credentials, BridgeCredentials):
            return cls(
                name=credentials.login,
                dialect=Dialect.TVBRIDGE,
                password=credentials.password,
                assumed_lifetime_s=credentials.assumed_lifetime_s,
            )
        return cls(
            name=credentials.name,
            dialect=Dialect.NATIVE,
            password=credentials.password,
            cid=credentials.cid,
            sec=credentials.sec,
            app_id=credentials.app_id,
            app_version=credentials.app_version,
        )


class TokenConfig(_Section):
    """Where tokens live in Redis and, optionally, how tradebridge obtains them itself."""

    key_template: str = Field("token:{account_name}", description="Redis key of an account's token")
    expiry_margin_s: float = Field(60.0, ge=0, description="stop using a token this early")
    renew_before_s: float = Field(15 * 60.0, ge=0, description="renew when less remains")
    renew_fraction: float = Field(0.8, gt=0, le=1, description="or this share has passed")
    lock_ttl_ms: int = Field(
        30_000, ge=1000, description="lifetime of the per-user renewal lock in Redis"
    )
    lock_wait_s: float = Field(35.0, gt=0, description="how long others wait for a renewal")
    max_logins_per_hour: int = Field(5, ge=1, description="logins per user (renewals aside)")
    max_penalty_resends: int = Field(
        3, ge=0, description="resends after a penalty ticket without captcha (§2.3)"
    )
    lockout_s: float = Field(
        3600.0, ge=0, description="a user refused by 423, 429 or a captcha waits this long"
    )
    verify_interval_s: float = Field(
        60.0,
        ge=0,
        description="how often `tradebridge tokens serve` asks Tradovate whether the token it "
        "keeps still works (one cheap read per user), and logs in again if it was refused; "
        "0 = never",
    )
    reseed_check_s: float = Field(
        2.0,
        gt=0,
        description="how often a self-managed login checks that its token keys are still in "
        "Redis, and writes them again if Redis lost them (restarted empty, flushed)",
    )
    native: NativeCredentials | None = Field(
        None, description="log in to the native API itself (else tokens are read from Redis)"
    )
    bridge: BridgeCredentials | None = Field(
        None, description="log in to the bridge itself (else tokens are read from Redis)"
    )

    def key_for(self, account_name: str) -> str:
        """Return the Redis key of an account's token."""
        return self.key_template.format(account_name=account_name)


class RedisConfig(_Section):
    """The Redis holding tokens and locks; ``REDIS_URL`` also sets it (empty: embedded)."""

    url: SecretStr | None = Field(
        None, description="redis:// URL; unset: a private Redis under data_dir"
    )
    socket_timeout_s: float = Field(5.0, gt=0, description="cap on one Redis command")
    open_connections: int | None = Field(
        None,
        ge=0,
        description="connections a worker process opens at start, so that a fan-out's rows "
        "never wait for theirs to open; unset: one per account its workers place at once, "
        "at most 64",
    )
    embedded_port: int = Field(
        0, ge=0, le=65535, description="port of the embedded Redis (no url); 0 picks a free one"
    )


class DatabaseConfig(_Section):
    """The Postgres ledger; ``DATABASE_URL`` also sets it (empty: the embedded server)."""

    url: SecretStr | None = Field(
        None,
        description="postgresql:// URL, special characters of the password percent-encoded "
        "(/ as %2F, # as %23, ? as %3F, @ as %40); unset: a private PostgreSQL under data_dir",
    )
    min_pool: int | None = Field(
        None,
        ge=0,
        description="connections kept open, each with the order path's statements prepared "
        "at its start; unset: the pool's size (max_pool), so an alert after a quiet spell "
        "never waits for a connection to open",
    )
    max_pool: int = Field(10, ge=1, description="connections at most (raised to workers + 2)")
    statement_timeout_s: float = Field(
        30.0,
        gt=0,
        description="the longest one statement may take, the wait for the server included: "
        "then the database counts as unavailable and the connection is closed (a connection "
        "a NAT or load balancer dropped without a word otherwise hangs, and a live worker's "
        "row with it)",
    )
    lazy_commits: bool = Field(
        True,
        description="commit a claim and the moves after a row's durable write-ahead (the "
        "broker's answer, fills, cancels) without waiting for the WAL flush: a crash of the "
        "database server may lose the last of them, which reconcile reads back from the "
        "broker; the alert's insert and the write-ahead always wait (docs/ledger.md)",
    )
    embedded_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="port of the embedded PostgreSQL (no url); 0 picks a free one",
    )


class UpConfig(_Section):
    """``tradebridge up``: the local stack's own parts (its HTTP port is ``serve.port``)."""

    sim_port: int = Field(8765, ge=0, le=65535, description="the simulator; 0 picks a free one")


class DashboardConfig(_Section):
    """The dashboard at ``/ui`` of ``serve`` and ``up`` (docs/dashboard.md)."""

    password: SecretStr | None = Field(
        None,
        description="the login password (TRADEBRIDGE_DASHBOARD__PASSWORD); unset: /ui answers "
        "404 saying how to turn it on (`up` makes one in its data directory). At least 12 "
        "characters",
    )
    session_ttl_s: float = Field(
        8 * 3600.0, gt=0, le=30 * 86400, description="a login lasts this long"
    )
    login_attempts_per_minute: int = Field(
        5, ge=1, description="login attempts per client address a minute (more get 429)"
    )
    secure_cookie: bool = Field(
        False, description="mark the session cookie Secure (the dashboard is reached by HTTPS)"
    )
    refresh_s: float = Field(
        1.0, gt=0, le=60, description="how often the live pages read the ledger again"
    )

    @field_validator("password")
    @classmethod
    def _long_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 12:
            # The length only: the value is a secret.
            raise ValueError("too short: use at least 12 characters")
        return value


class LoggingConfig(_Section):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="least level")
    json_output: bool | None = Field(
        None,
        description="true: JSON lines; false: the human console format; unset: JSON, or the "
        "console format (in colour) when the log goes to a terminal",
    )


class ServeConfig(_Section):
    """The worker process (``tradebridge serve``): HTTP listener, dispatchers, start-up."""

    host: str = Field("127.0.0.1", description="HTTP interface (webhook, /healthz, /metrics)")
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    migrate_on_start: bool | None = Field(
        None,
        description="apply pending migrations at start; unset: on for the embedded database, "
        "off for an external one (where `tradebridge db migrate` is a deliberate step)",
    )
    shutdown_grace_s: float = Field(10.0, gt=0, description="time to hand back claimed rows")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto",
        description="event loop of `serve` and `up`: uvloop where installed (auto: it comes "
        "with the package on Linux and macOS, and costs less CPU per alert), else asyncio's",
    )
    broker_health_ttl_s: float = Field(30.0, ge=0, description="cache of /healthz broker probes")
    # Slow clients cannot hold the server (runtime/http_guard.py, docs/running.md).
    header_timeout_s: float = Field(
        5.0, gt=0, description="a request line and headers must arrive within this (else 408)"
    )
    body_timeout_s: float = Field(
        5.0, gt=0, description="after its headers, a request body must arrive within this (408)"
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="an idle keep-alive connection is closed after this"
    )
    max_header_bytes: int = Field(16384, ge=1024, description="request line and headers (400)")
    max_connections_per_address: int = Field(
        32,
        ge=0,
        description="open connections per client address (more get 429); 0 = no cap. "
        "webhook.allowed_ips (TradingView) and webhook.trusted_proxies are exempt",
    )
    operator_token: SecretStr | None = Field(
        None,
        description="bearer token of the operator endpoints (POST /kill, POST /resume, GET "
        "/kill); unset: they answer 403. At least 24 characters (docs/kill-switch.md)",
    )
    kill_switch_poll_s: float = Field(
        0.5,
        gt=0,
        le=1.0,
        description="every process reads the kill switches again at least this often (a "
        "change also reaches it at once by NOTIFY); at most 1 s",
    )
    risk_state_interval_s: float = Field(
        5.0,
        gt=0,
        description="every process reads each account's risk standing (P&L, room under each "
        "limit: /healthz, /metrics) at least this often",
    )

    @field_validator("operator_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 24:
            # The length only: the value is a secret.
            raise ValueError("too short: use at least 24 random characters")
        return value


# Accounts a worker places at once when ``dispatcher.max_accounts`` is unset and fewer are
# configured.
_DEFAULT_MAX_ACCOUNTS = 16


class DispatcherConfig(_Section):
    """How workers claim, place and reconcile ledger rows (docs/dispatcher.md)."""

    workers: int = Field(
        1,
        ge=0,
        description="dispatchers per process; 0 = an intake-only process (webhook, health) "
        "whose rows other processes' workers place",
    )
    max_accounts: int | None = Field(
        None,
        ge=1,
        description="accounts placed concurrently per worker; none: every configured account "
        "(at least 16), so that an alert fanned out to all of them is placed at once",
    )
    claim_batch: int = Field(
        16, ge=1, description="rows of one account claimed at once (placed one after the other)"
    )

    drain_interval_s: float = Field(2.0, gt=0, description="SELECT drain even without NOTIFY")
    reconcile_interval_s: float = Field(10.0, gt=0, description="time between reconcile rounds")
    stale_after_s: float = Field(
        120.0, gt=0, description="a row claimed this long ago by a silent worker is recovered"
    )
    liveness_grace_s: float = Field(
        10.0,
        ge=0,
        description="after the database (re)started, or came back to this process, how long "
        "reconcile waits before it reads a free liveness lock as a dead worker (live workers "
        "take theirs again within about a second)",
    )
    liveness_fresh_s: float = Field(
        5.0,
        gt=0,
        description="an order leaves only if this worker's liveness lock was confirmed (probed "
        "every 2 s) within this long, by the session that held it at the row's write-ahead; "
        "otherwise the send waits for the lock and re-reads the row (docs/dispatcher.md)",
    )
    dead_worker_hold_s: float = Field(
        20.0,
        ge=0,
        description="how long reconcile holds a dead worker's free liveness lock before it "
        "recovers its rows: at least liveness_fresh_s plus the longer of request_timeout_s and "
        "lookup_absent_after_s, so the worker's last send, if any, shows at the broker",
    )
    liveness_keepalive_s: int = Field(
        30,
        ge=0,
        description="TCP keepalive asked of the server for the liveness lock's connection: a "
        "worker whose host vanished frees its lock after about this long, not the kernel's "
        "~2 h (0: the server's own settings; through a pooler, the pooler's)",
    )
    error_retry_s: float = Field(
        1.0, gt=0, description="first wait before a row that hit an internal error is retried"
    )
    error_retry_max_s: float = Field(
        60.0, gt=0, description="longest wait between retries of a row hitting internal errors"
    )
    lookup_attempts: int = Field(5, ge=1, description="lookups of an unknown row per round")
    lookup_backoff_s: float = Field(0.5, ge=0, description="first wait between lookups; doubles")
    lookup_backoff_max_s: float = Field(10.0, ge=0, description="longest wait between lookups")
    max_resends: int = Field(3, ge=0, description="resends after lookups proved absence")
    unknown_bound_s: float = Field(
        60.0,
        gt=0,
        description="how long an unknown row may hold back its account; then it is escalated "
        "(needs_review) or, if proven absent, failed without a late resend (docs/dispatcher.md)",
    )
    unknown_blocks: Literal["position", "all"] = Field(
        "position",
        description="what an unknown row holds back: intents that depend on the position or "
        "working orders (exit, reverse, target, cancel, flatten), or every later row",
    )
    exit_cancels: Literal["legs", "all"] = Field(
        "legs",
        description="what an exit, reverse or target that closes or turns the position cancels "
        "besides sending its order: the protective bracket legs only (resting entries stay), "
        "or every working order on the contract (docs/tradingview.md)",
    )
    position_check_s: float = Field(
        60.0,
        ge=0,
        description="how often reconcile compares each quiet account's positions at the broker "
        "with what tradebridge's own fills explain; 0: never (docs/dispatcher.md, Positions)",
    )
    position_settle_s: float = Field(
        5.0,
        ge=0,
        description="an account is checked only when none of its rows moved for this long",
    )
    handback_timeout_s: float = Field(10.0, gt=0, description="wait for a submit on shutdown")
    event_retry_s: float = Field(
        0.5, gt=0, description="wait before re-reading a row an event found not yet placed"
    )

    def accounts_at_once(self, configured: int) -> int:
        """Return how many accounts one worker places at once, ``configured`` being set up."""
        return self.max_accounts or max(_DEFAULT_MAX_ACCOUNTS, configured)


class RiskConfig(RiskRules):
    """Pre-trade rules (docs/risk.md); a breach denies the row (nothing is sent)."""

    kill_switch: bool = Field(
        False,
        description="hold the global kill switch on: deny every new order whatever "
        "`tradebridge resume` says (docs/kill-switch.md)",
    )
    strategies: dict[str, RiskOverride] = Field(
        default_factory=dict,
        description="rules per strategy_name: only the fields given override [risk] and the "
        "account's",
    )

    @field_validator("strategies")
    @classmethod
    def _account_wide(cls, value: dict[str, RiskOverride]) -> dict[str, RiskOverride]:
        for name, override in value.items():
            wide = sorted(ACCOUNT_WIDE_RULES & override.model_fields_set)
            if wide:
                raise ValueError(
                    f"risk.strategies.{name}: {', '.join(wide)} act on the whole account; set "
                    "them in [risk] or the account's [accounts.risk]"
                )
        return value


class OrdersConfig(_Section):
    """How orders are shaped (docs/tradingview.md "Bracket legs")."""

    leg_time_in_force: Literal["entry", "gtc", "day"] = Field(
        "entry",
        description="time in force of bracket legs: the entry's (IOC/FOK entries: Day), or "
        "always GTC, or always Day",
    )

    marketable_limit: Literal["fill", "stop", "deny"] = Field(
        "fill",
        description="an entry's limit on the wrong side of the market (a buy above the ask, a "
        "sell below the bid): send it as it is, to fill at once (fill); send a stop at that "
        "price, a breakout entry (stop: what the deployment tradebridge replaces did); or deny "
        "it (deny). Judged against the broker's quote, else the row's reference_price; "
        "without either it goes as it is (docs/migrating.md)",
    )

    @field_validator("leg_time_in_force", "marketable_limit", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


MAX_ROLL_DAYS = 90
"""The most calendar days before expiry a front month may move on: a quarter's listing cycle."""


class ContractsConfig(_Section):
    """When a continuous symbol (``MNQ1!``) or a bare root moves to the next month."""

    roll_days: dict[str, int] = Field(
        default_factory=dict,
        description="calendar days before expiry on which a root's front month moves on, per "
        "root, e.g. { MNQ = 8, CL = 3 }; roots not named keep the built-in days ("
        + ", ".join(f"{p.root} {p.roll_days}" for p in PRODUCTS.values())
        + "), which nobody has checked against the day TradingView's 1! rolls "
        "(docs/tradingview.md)",
    )

    @field_validator("roll_days")
    @classmethod
    def _known_roots_and_days(cls, value: dict[str, int]) -> dict[str, int]:
        days = {root.strip().upper(): count for root, count in value.items()}
        unknown = [root for root in days if root not in PRODUCTS]
        if unknown:
            raise ValueError(f"unknown root(s) {', '.join(unknown)} (known: {', '.join(PRODUCTS)})")
        wrong = [f"{root} = {n}" for root, n in days.items() if not 0 <= n <= MAX_ROLL_DAYS]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)}: roll days are calendar days before expiry, 0 (roll on "
                f"the last trading day) to {MAX_ROLL_DAYS}"
            )
        return days

    def calendar(self) -> RollCalendar:
        """Return the roll calendar these settings make."""
        return RollCalendar(dict(self.roll_days))


TRADINGVIEW_WEBHOOK_IPS: tuple[str, ...] = (
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
)
"""TradingView's documented webhook source addresses (support article 43000529348)."""


class WebhookAccountEntry(_Section):
    """One member of an account group: an account and its quantity multiplier."""

    account: str = Field(min_length=1, description="the name of one of the [[accounts]]")
    multiplier: Decimal = Field(Decimal(1), gt=0, description="quantity x this; must stay whole")


class WebhookConfig(_Section):
    """The TradingView webhook (docs/tradingview.md): secret, checks, limits, routing."""

    enabled: bool = Field(
        True, description="serve POST /webhook; false for setups fed only by database rows"
    )
    secret: SecretStr | None = Field(None, description="required unless a local test says so")
    allow_no_secret_for_local_tests: bool = Field(
        False, description="serve the webhook without a secret; loopback serve.host only"
    )
    ip_allowlist: bool = Field(False, description="answer 403 to addresses not in allowed_ips")
    allowed_ips: list[str] = Field(
        default_factory=lambda: list(TRADINGVIEW_WEBHOOK_IPS),
        description="addresses or networks (CIDR); TradingView's four by default",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="peers whose X-Forwarded-For is believed (CIDR)"
    )
    client_cert: bool = Field(False, description="require the proxy-verified client cert")
    client_cert_header: str = Field(
        "X-Client-Cert-Subject", description="the proxy's header with the verified subject"
    )
    client_cert_verify_header: str = Field(
        "X-Client-Cert-Verify", description="the proxy's verdict; must say SUCCESS"
    )
    client_cert_subject: dict[str, str] = Field(
        default_factory=lambda: {"CN": "TradingView Webhooks", "O": "TradingView, Inc."},
        description="subject attributes the certificate must carry",
    )
    max_body_bytes: int = Field(65536, ge=256, description="larger bodies get 413")
    stale_after_s: float = Field(60.0, gt=0, description="older alerts are stored denied")
    clock_skew_s: float = Field(
        5.0, ge=0, description="tolerated clock difference, added to stale_after_s"
    )
    dedupe_window_s: float = Field(60.0, gt=0, description="for alerts without a fire time")
    rate_limit_per_minute: int = Field(600, ge=0, description="per address and process; 0 off")
    rate_limit_burst: int = Field(60, ge=1, description="alerts an address may send at once")
    default_account: str | None = Field(None, description="when an alert names none")
    groups: dict[str, list[str | WebhookAccountEntry]] = Field(
        default_factory=dict, description='"group:NAME" in an alert means these accounts'
    )
    symbol_map: dict[str, str] = Field(
        default_factory=dict, description="root to trade per alert root, e.g. NQ = MNQ"
    )
    default_strategy: str = Field("tradingview", description="strategy_name when none given")
    store_timeout_s: float = Field(
        2.0, gt=0, description="give up storing (answer 503) well inside TradingView's 3 s"
    )


# --- [notify]: notifications (runtime/notify.py, docs/notifications.md) --------------------


def notify_variable(channel: str) -> str:
    """Return the default variable of a channel's URL: ``TRADEBRIDGE_NOTIFY_<NAME>_URL``."""
    return f"TRADEBRIDGE_NOTIFY_{re.sub(r'[^A-Z0-9]', '_', channel.upper())}_URL"


class NotifyChannel(_Section):
    """One place notifications go (``[[notify.channels]]``): an apprise URL from a variable.

    The URL carries the channel's secret (a webhook token, a bot token, a mail password),
    so it is read from a variable (the environment or the secrets file), never written in
    the TOML file, and never logged or stored: the ledger records the channel's name.
    """

    name: str = Field(
        min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="how logs and the ledger name it"
    )
    url_env: str | None = Field(
        None, description="variable holding the apprise URL; default TRADEBRIDGE_NOTIFY_<NAME>_URL"
    )
    url: SecretStr | None = Field(
        None, description="the apprise URL (discord://, tgram://, slack://, mailto://, json://…); "
        "filled from url_env at load",
    )  # fmt: skip
    events: list[NoticeKind] = Field(
        default_factory=list, description="only these kinds (docs/notifications.md); empty: all"
    )

    @property
    def url_variable(self) -> str:
        """Return the variable the URL is read from."""
        return self.url_env or notify_variable(self.name)

    def with_secrets(self, environ: Mapping[str, str]) -> NotifyChannel:
        """Return this channel with its URL read from ``environ`` (it wins over a literal)."""
        if url := environ.get(self.url_variable):
            return self.model_copy(update={"url": SecretStr(url.strip())})
        return self

    def wants(self, kind: NoticeKind) -> bool:
        """Return whether notices of ``kind`` go to this channel (tests go everywhere)."""
        return not self.events or kind in self.events or kind is NoticeKind.TEST


class NotifyConfig(_Section):
    """Notifications (docs/notifications.md): which channels, when, and how often at most."""

    enabled: bool = Field(True, description="false: serve sends none even with channels set")
    channels: list[NotifyChannel] = Field(default_factory=list)
    interval_s: float = Field(5.0, gt=0, description="how often conditions and rows are read")
    window_s: float = Field(
        900.0, gt=0, description="at most one message per condition per window (raised again, "
        "changed); its resolution is always told"
    )  # fmt: skip
    repeat_s: float = Field(
        3600.0, ge=0, description="remind of a condition still on this often; 0: never"
    )
    rows_window_s: float = Field(
        60.0, ge=0, description="denied and rejected signals: at most one message per kind per "
        "window, listing every row since the last"
    )  # fmt: skip
    catch_up_s: float = Field(
        600.0, ge=0, description="at start, announce denied and rejected rows this old at most"
    )
    unknown_after_s: float = Field(
        120.0, gt=0, description="an outcome still unknown this long is announced"
    )
    websocket_down_s: float = Field(
        60.0, gt=0, description="a user-sync WebSocket down this long is announced"
    )
    queue_age_s: float = Field(
        60.0, gt=0, description="a pending row waiting this long means the queue backs up"
    )
    queue_depth: int = Field(200, ge=1, description="or this many pending rows")
    token_expiring_s: float = Field(
        600.0, gt=0, description="a token this close to expiry was not renewed (keep it under "
        "tokens.renew_before_s)"
    )  # fmt: skip
    send_timeout_s: float = Field(10.0, gt=0, description="one attempt at one channel, at most")
    attempts: int = Field(4, ge=1, description="attempts per message and channel")
    retry_wait_s: float = Field(1.0, ge=0, description="first wait between attempts (doubling)")
    retry_max_s: float = Field(60.0, ge=0, description="longest wait between attempts")
    queue_size: int = Field(
        100, ge=1, description="messages waiting for the channels; more are dropped (recorded)"
    )

    @model_validator(mode="after")
    def _distinct_channels(self) -> NotifyConfig:
        names = [c.name for c in self.channels]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"notify channels named twice: {', '.join(twice)}")
        return self

    def with_secrets(self, environ: Mapping[str, str]) -> NotifyConfig:
        """Return the section with every channel's URL read from ``environ``."""
        channels = [c.with_secrets(environ) for c in self.channels]
        return self.model_copy(update={"channels": channels})

    @property
    def active(self) -> bool:
        """Return whether notifications run: enabled, with at least one channel."""
        return self.enabled and bool(self.channels)

    def missing_urls(self) -> list[str]:
        """Return the variables of channels whose URL is not set."""
        return [
            c.url_variable for c in self.channels if c.url is None or not c.url.get_secret_value()
        ]


def _environment() -> Mapping[str, str]:
    """Return the environment of the Settings being built (secrets file under os.environ)."""
    found = _environ.get()
    return os.environ if found is None else found


class _Environment(EnvSettingsSource):
    """``TRADEBRIDGE_...`` variables, from the process environment and the secrets file."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class _ConventionalEnv(PydanticBaseSettingsSource):
    """``DATABASE_URL`` and ``REDIS_URL``, as every hosting platform sets them."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        del field  # every value comes from __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = _environment()
        out: dict[str, Any] = {}
        if url := environ.get("DATABASE_URL"):
            out["database"] = {"url": url}
        if url := environ.get("REDIS_URL"):
            out["redis"] = {"url": url}
        return out


# --- the secrets file ----------------------------------------------------------------------

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def config_path() -> Path:
    """Return the configuration file the settings are read from (it need not exist)."""
    path = _config_file.get()
    if path is None:
        env_path = os.environ.get("TRADEBRIDGE_CONFIG")
        path = Path(env_path) if env_path else DEFAULT_CONFIG_FILE
    return path


def env_file_path(config: Path, explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return where the secrets file of ``config`` is.

    ``explicit`` (an argument), else ``TRADEBRIDGE_ENV_FILE``, else ``env_file`` in the TOML
    file (relative to that file), else ``tradebridge.env`` beside the TOML file.
    """
    if explicit:
        return Path(explicit)
    if from_env := os.environ.get("TRADEBRIDGE_ENV_FILE"):
        return Path(from_env)
    try:
        with config.open("rb") as handle:
            configured = tomllib.load(handle).get("env_file")
    except (OSError, tomllib.TOMLDecodeError):
        configured = None  # a missing or broken TOML file is reported by its own source
    if isinstance(configured, str) and configured:
        return config.parent / configured
    return config.parent / ENV_FILE_NAME


def read_env_file(path: Path) -> dict[str, str]:
    """Return the variables of a secrets file (``{}`` if there is none).

    ``ConfigError`` if group or others have any access to it (the fix is ``chmod 600``), or
    if a line is not ``KEY=VALUE``. Values follow systemd's ``EnvironmentFile=`` quoting:
    ``'...'`` verbatim, ``"..."`` with backslash escapes, unquoted with backslash escapes.
    Errors name the line, never its content (it may be a secret).
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read the secrets file {path} ({type(e).__name__})") from e
    if os.name != "nt" and stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"the secrets file {path} is open to group or others (mode "
            f"{stat.S_IMODE(mode):04o}); its passwords must be private: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the secrets file {path} ({type(e).__name__})") from e
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, equals, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        if not equals or not _ENV_KEY.fullmatch(key):
            raise ConfigError(f"{path}, line {number}: expected KEY=VALUE")
        try:
            found[key] = _env_value(value.strip())
        except ValueError as e:
            raise ConfigError(f"{path}, line {number} ({key}): {e}") from None
    return found


def _env_value(text: str) -> str:
    if text[:1] == "'":
        if len(text) < 2 or not text.endswith("'"):
            raise ValueError("unterminated single quote")
        return text[1:-1]
    if text[:1] == '"':
        body = text[1:-1]
        escaped_end = (len(body) - len(body.rstrip("\\"))) % 2 == 1
        if len(text) < 2 or not text.endswith('"') or escaped_end:
            raise ValueError("unterminated double quote")
        return re.sub(r'\\([\\"`$])', r"\1", body)
    return re.sub(r"\\(.)", r"\1", text)


def format_env_value(value: str) -> str:
    """Return ``value`` quoted for a secrets file that systemd and compose read alike."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ConfigError("a secret for the secrets file cannot span lines")
    if "'" not in value:
        return f"'{value}'"  # verbatim in systemd and compose alike
    return '"' + re.sub(r'([\\"`$])', r"\\\1", value) + '"'


def load_environ(config: Path, explicit: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Return the environment settings are built from: the secrets file under os.environ."""
    return {**read_env_file(env_file_path(config, explicit)), **os.environ}


class Settings(BaseSettings):
    """The whole configuration of one tradebridge installation."""

    model_config = SettingsConfigDict(
        env_prefix="TRADEBRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        Path(".tradebridge"),
        description="home of the embedded servers, the device id, local secrets, endpoints.json",
    )
    env_file: Path | None = Field(
        None,
        description="the secrets file (KEY=VALUE lines, mode 0600), relative to the TOML "
        "file; default: tradebridge.env beside it. Its variables count as environment "
        "variables; those already in the environment win",
    )
    tradovate: TradovateConfig = Field(default_factory=TradovateConfig)
    tvbridge: TvBridgeConfig = Field(default_factory=TvBridgeConfig)
    users: list[UserConfig] = Field(
        default_factory=list,
        description="Tradovate logins tradebridge logs in with itself, each with its own "
        "token, lock, lockout and request budget (docs/tradovate.md)",
    )
    accounts: list[AccountConfig] = Field(default_factory=list)
    tokens: TokenConfig = Field(default_factory=TokenConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    dispatcher: DispatcherConfig = Field(default_factory=DispatcherConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    orders: OrdersConfig = Field(default_factory=OrdersConfig)
    contracts: ContractsConfig = Field(default_factory=ContractsConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    up: UpConfig = Field(default_factory=UpConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)

    def __init__(self, *args: Any, **values: Any) -> None:
        """Build the settings from ``values``, the environment, the secrets file and the TOML."""
        environ = load_environ(config_path(), values.get("env_file"))
        token = _environ.set(environ)
        try:
            super().__init__(*args, **values)
        finally:
            _environ.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: arguments, TRADEBRIDGE_ env, conventional env, TOML file.

        The environment is the process's over the secrets file's (``load_environ``).
        """
        del dotenv_settings, file_secret_settings  # the secrets file is read by __init__
        environment = _Environment(settings_cls, _environment())
        del env_settings  # replaced by the one that also sees the secrets file
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path())
        return (init_settings, environment, _ConventionalEnv(settings_cls), toml)

    @model_validator(mode="after")
    def _check_accounts(self) -> Settings:
        names = [a.name for a in self.accounts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"accounts listed twice: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _check_users(self) -> Settings:
        environ = _environment()
        self.users = [user.with_secrets(environ) for user in self.users]
        seen: set[tuple[str, Dialect]] = set()
        for user in self.users:
            if (user.name, user.dialect) in seen:
                raise ValueError(f"user {user.name} ({user.dialect.value}) is listed twice")
            seen.add((user.name, user.dialect))
        for section, legacy in (("native", self.tokens.native), ("bridge", self.tokens.bridge)):
            if legacy is None:
                continue
            name = UserConfig.from_credentials(legacy).name
            if any(user.name == name for user in self.users):
                raise ValueError(
                    f"user {name} is configured twice, in [[users]] and in [tokens.{section}]; "
                    "keep the [[users]] entry and remove the other"
                )
        variables: dict[str, str] = {}
        for user in self.users:
            for variable in (user.password_variable, user.sec_variable):
                owner = variables.setdefault(variable, user.name)
                if owner != user.name:
                    raise ValueError(
                        f"users {owner} and {user.name} both read {variable}; set "
                        "password_env / sec_env for one of them"
                    )
        for account in self.accounts:
            self.user_of(account)  # raises on an account that cannot be given a user
        return self

    @model_validator(mode="after")
    def _notify_secrets(self) -> Settings:
        self.notify = self.notify.with_secrets(_environment())
        return self

    def configured_users(self) -> list[UserConfig]:
        """Return every Tradovate user with a login section: [[users]], [tokens.*]."""
        legacy = [c for c in (self.tokens.native, self.tokens.bridge) if c is not None]
        return [*self.users, *(UserConfig.from_credentials(c) for c in legacy)]

    def user_of(self, account: AccountConfig) -> str | None:
        """Return the Tradovate user whose token serves ``account`` (None: unknown).

        Its ``user`` if set, else the only configured user of its dialect. ``ConfigError``
        if several users of its dialect could own it, or if its ``user`` is a ``[[users]]``
        entry of the other dialect only.
        """
        users = self.configured_users()
        if account.user is not None:
            # [tokens.native] / [tokens.bridge] keep their old rule: an account of the other
            # dialect reads its token from Redis.
            dialects = {u.dialect for u in self.users if u.name == account.user}
            if dialects and account.dialect not in dialects:
                other = ", ".join(sorted(d.value for d in dialects))
                raise ConfigError(
                    f"account {account.name} ({account.dialect.value}) names user "
                    f"{account.user}, who is configured as a {other} user; set the "
                    "account's dialect to match, or configure the user for "
                    f"{account.dialect.value} too"
                )
            return account.user
        candidates = [u.name for u in users if u.dialect is account.dialect]
        if len(candidates) > 1:
            raise ConfigError(
                f"account {account.name} names no user, and {len(candidates)} "
                f"{account.dialect.value} users are configured ({', '.join(candidates)}): "
                f'set user = "<one of them>" in its [[accounts]] entry'
            )
        return candidates[0] if candidates else None

    def login_of(self, account: AccountConfig) -> UserConfig | None:
        """Return the configured user who logs in for ``account``, or None (Redis only)."""
        name = self.user_of(account)
        for user in self.configured_users():
            if user.name == name and user.dialect is account.dialect:
                return user
        return None

    def account(self, name: str) -> AccountConfig:
        """Return one configured account; ``ConfigError`` names the known ones."""
        for account in self.accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in self.accounts) or "none"
        raise ConfigError(f"account {name!r} is not configured (configured: {known})")

    def token_key(self, account_name: str) -> str:
        """Return the Redis key of an account's token (per-account override first)."""
        for account in self.accounts:
            if account.name == account_name and account.token_key:
                return account.token_key
        return self.tokens.key_for(account_name)

    @property
    def notes(self) -> tuple[str, ...]:
        """Return the warnings of validation: values it completed (``native_url`` + ``/v1``)."""
        return self.tradovate.notes

    def device_id(self) -> str:
        """Return this installation's device id, generated once into ``data_dir``."""
        return self.tradovate.device_id or load_device_id(self.data_dir)

    def __repr__(self) -> str:
        return f"Settings({self.redacted()!r})"

    __str__ = __repr__

    def redacted(self) -> dict[str, Any]:
        """Return the effective settings as JSON-ready data with every secret masked."""
        data: dict[str, Any] = _mask_urls(self.model_dump(mode="json"))
        return data


def load_device_id(data_dir: Path) -> str:
    """Read the persisted device id, creating it on first use; never rotated (§2.7)."""
    path = data_dir / "device_id"
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    device_id = str(uuid.uuid4())
    # Exclusive create: two processes starting at once must end up with the same id.
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(device_id + "\n")
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    return device_id


_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)


def _mask_urls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_urls(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\g<head>***@", value)
    return value


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load the settings (``config_file`` beats ``TRADEBRIDGE_CONFIG``); ``ConfigError`` if bad."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"configuration file {config_file} does not exist")
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(f"invalid settings: {_describe(e)}") from e
    finally:
        _config_file.reset(token)


def _describe(error: ValidationError) -> str:
    # Never echo input values: they may be secrets.
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
