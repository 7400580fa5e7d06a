"""One typed settings tree: a TOML file plus environment variables.

Sources, strongest first: keyword arguments, ``TRADEBRIDGE_...`` variables (nested with
``__``, e.g. ``TRADEBRIDGE_TRADOVATE__ENVIRONMENT=live``), the conventional
``DATABASE_URL`` and ``REDIS_URL``, the TOML file (``tradebridge.toml``, or the path in
``TRADEBRIDGE_CONFIG``), then defaults. Secrets belong in the environment; ``redacted()``
prints the effective settings with every secret masked (``tradebridge config check``).
"""

from __future__ import annotations

import os
import re
import uuid
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tradebridge.domain.enums import Dialect, Environment
from tradebridge.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("tradebridge.toml")
_NATIVE_URLS = {
    Environment.DEMO: "https://demo.tradovateapi.com/v1",
    Environment.LIVE: "https://live.tradovateapi.com/v1",
}
_BRIDGE_URLS = {
    Environment.DEMO: "https://tv-demo.tradovateapi.com",
    Environment.LIVE: "https://tv-live.tradovateapi.com",
}
_config_file: ContextVar[Path | None] = ContextVar("tradebridge_config_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryConfig(_Section):
    """Retries of reads, cancels, logins and connects (never of a submit)."""

    enabled: bool = True
    attempts: int = Field(5, ge=1, description="cap on attempts, the first included")
    timeout_s: float = Field(30.0, gt=0, description="cap on the total time spent retrying")
    wait_initial_s: float = Field(0.2, ge=0)
    wait_max_s: float = Field(5.0, ge=0)
    wait_jitter_s: float = Field(0.5, ge=0)


class EventNamesConfig(_Section):
    """The strings of WebSocket ``props`` events; the reference marks them unverified (§8.7)."""

    order: str = "order"
    order_version: str = "orderVersion"
    execution_report: str = "executionReport"
    fill: str = "fill"
    position: str = "position"
    command: str = "command"
    order_strategy: str = "orderStrategy"
    order_strategy_link: str = "orderStrategyLink"
    created: str = "Created"
    updated: str = "Updated"
    deleted: str = "Deleted"


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

    environment: Environment = Environment.DEMO
    native_url: str = Field("", description="native REST base incl. /v1; derived if empty")
    bridge_url: str = Field("", description="TradingView bridge base; derived if empty")
    ws_url: str = Field("", description="user WebSocket; derived from native_url if empty")
    request_timeout_s: float = Field(10.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    # Client-side budget per Tradovate user (reference §7): ~1 request/s with small bursts.
    requests_per_s: float = Field(1.0, gt=0)
    request_burst: int = Field(5, ge=1)
    device_id: str | None = Field(None, description="override; normally generated once")
    app_version: str = "1.0"
    retry: RetryConfig = Field(default_factory=RetryConfig)
    ws_heartbeat_s: float = Field(2.5, gt=0)
    ws_dead_after_s: float = Field(10.0, gt=0, description="no frame this long: reconnect")
    ws_reconnect_max_s: float = Field(30.0, gt=0)
    event_names: EventNamesConfig = Field(default_factory=EventNamesConfig)
    strategies: StrategyConfig = Field(default_factory=StrategyConfig)
    lookup_absent_after_s: float = Field(10.0, ge=0, description="reference §11.3 step 5")
    lookup_by_shape: Literal["review", "adopt"] = Field(
        "review",
        description="a lost submit's lookup finds no clOrdId of ours but one new order of the "
        "same shape and bracket WITHOUT any clOrdId (placed by hand, or Tradovate dropped ours): "
        "leave the row for review (needs_review), or adopt it flagged (reference §11.3 step 4)",
    )

    @model_validator(mode="after")
    def _derive_urls(self) -> TradovateConfig:
        if not self.native_url:
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

    # currentBid/currentAsk (§9.7, observed required on tv-demo market orders): on every
    # order, never, or on market orders only ("when_required"); sending them reads /quotes.
    bid_ask: Literal["always", "never", "when_required"] = "always"
    # Flatten by DELETE /positions/{id} where /accounts says supportClosePosition ("auto"),
    # always that way, or always by an opposite-side market order (§9.8).
    flatten: Literal["auto", "close_position", "market_order"] = "auto"
    poll_interval_s: float = Field(1.0, gt=0, description="how often /orders is polled")
    lookup_absent_after_s: float | None = Field(
        None, ge=0, description="lookup window; None: tradovate.lookup_absent_after_s"
    )
    lookup_poll_s: float = Field(0.5, gt=0)
    lookup_slack_s: float = Field(2.0, ge=0, description="clock skew allowed by a lookup")
    lookup_baseline: bool = Field(
        True,
        description="read /orders before each submit, so a lost answer's order can be proven "
        "new; off: a same-shape order without creation time leaves the row for review",
    )
    cache_ttl_s: float = Field(300.0, ge=0, description="accounts, instruments")
    history_max_count: int = Field(200, ge=1, description="maxCount of /ordersHistory")
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra headers, e.g. Origin (§9.11)"
    )


def websocket_url(native_url: str) -> str:
    """Derive the user WebSocket URL from the native REST base (``.../v1/websocket``)."""
    base = re.sub(r"^http", "ws", native_url.rstrip("/"))
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/websocket"


class AccountConfig(_Section):
    """One account tradebridge trades, in one dialect."""

    name: str = Field(min_length=1, description="accountSpec, e.g. PAAPEX1361890000010")
    dialect: Dialect = Dialect.NATIVE
    native_id: int | None = None
    bridge_id: str | None = None
    user: str | None = Field(None, description="Tradovate user owning it (token sharing)")
    token_key: str | None = Field(None, description="overrides the token key template")


class NativeCredentials(_Section):
    """Self-managed native login (``auth/accesstokenrequest``)."""

    name: str
    password: SecretStr
    app_id: str = "tradebridge"
    app_version: str = "1.0"
    cid: int = 0
    sec: SecretStr = SecretStr("")


class BridgeCredentials(_Section):
    """Self-managed TradingView-bridge login (``POST /authorize``)."""

    login: str
    password: SecretStr
    # §9.3: ``expiration`` is optional; without it (and without a JWT exp) assume this.
    assumed_lifetime_s: float = Field(15 * 60.0, gt=0)


class TokenConfig(_Section):
    """Where tokens live in Redis and, optionally, how tradebridge obtains them itself."""

    key_template: str = "token:{account_name}"
    expiry_margin_s: float = Field(60.0, ge=0, description="stop using a token this early")
    renew_before_s: float = Field(15 * 60.0, ge=0, description="renew when less remains")
    renew_fraction: float = Field(0.8, gt=0, le=1, description="or this share has passed")
    lock_ttl_ms: int = Field(30_000, ge=1000)
    lock_wait_s: float = Field(35.0, gt=0, description="how long others wait for a renewal")
    max_logins_per_hour: int = Field(5, ge=1)
    max_penalty_resends: int = Field(3, ge=0)
    lockout_s: float = Field(3600.0, ge=0)
    reseed_check_s: float = Field(
        2.0,
        gt=0,
        description="how often a self-managed login checks that its token keys are still in "
        "Redis, and writes them again if Redis lost them (restarted empty, flushed)",
    )
    native: NativeCredentials | None = None
    bridge: BridgeCredentials | None = None

    def key_for(self, account_name: str) -> str:
        """Return the Redis key of an account's token."""
        return self.key_template.format(account_name=account_name)


class RedisConfig(_Section):
    """The Redis holding tokens and locks; ``REDIS_URL`` also sets it."""

    url: SecretStr | None = None
    socket_timeout_s: float = Field(5.0, gt=0)


class DatabaseConfig(_Section):
    """The Postgres ledger; ``DATABASE_URL`` also sets it (empty: the embedded server)."""

    url: SecretStr | None = None
    min_pool: int = Field(1, ge=0)
    max_pool: int = Field(10, ge=1)


class LoggingConfig(_Section):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_output: bool = True


class ServeConfig(_Section):
    """The worker process (``tradebridge serve``): HTTP listener, dispatchers, start-up."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    # Apply pending migrations at start: None means on for the embedded database, off for
    # an external one (where `tradebridge db migrate` is a deliberate step).
    migrate_on_start: bool | None = None
    shutdown_grace_s: float = Field(10.0, gt=0, description="time to hand back claimed rows")
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


class DispatcherConfig(_Section):
    """How workers claim, place and reconcile ledger rows (docs/dispatcher.md)."""

    workers: int = Field(
        1,
        ge=0,
        description="dispatchers per process; 0 = an intake-only process (webhook, health) "
        "whose rows other processes' workers place",
    )
    max_accounts: int = Field(16, ge=1, description="accounts placed concurrently per worker")
    claim_batch: int = Field(
        16, ge=1, description="rows of one account claimed at once (placed one after the other)"
    )
    drain_interval_s: float = Field(2.0, gt=0, description="SELECT drain even without NOTIFY")
    reconcile_interval_s: float = Field(10.0, gt=0)
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
    error_retry_s: float = Field(
        1.0, gt=0, description="first wait before a row that hit an internal error is retried"
    )
    error_retry_max_s: float = Field(
        60.0, gt=0, description="longest wait between retries of a row hitting internal errors"
    )
    lookup_attempts: int = Field(5, ge=1, description="lookups of an unknown row per round")
    lookup_backoff_s: float = Field(0.5, ge=0)
    lookup_backoff_max_s: float = Field(10.0, ge=0)
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
    handback_timeout_s: float = Field(10.0, gt=0, description="wait for a submit on shutdown")
    event_retry_s: float = Field(
        0.5, gt=0, description="wait before re-reading a row an event found not yet placed"
    )


class RiskConfig(_Section):
    """Basic pre-trade limits; a breach denies the row (nothing is sent)."""

    kill_switch: bool = Field(False, description="deny every new order")
    max_order_qty: int | None = Field(None, ge=1, description="contracts per order")
    max_position: int | None = Field(
        None, ge=1, description="absolute position per account and contract after the order"
    )


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


TRADINGVIEW_WEBHOOK_IPS: tuple[str, ...] = (
    "52.89.214.238",
    "34.212.75.30",
    "54.218.53.128",
    "52.32.178.7",
)
"""TradingView's documented webhook source addresses (support article 43000529348)."""


class WebhookAccountEntry(_Section):
    """One member of an account group: an account and its quantity multiplier."""

    account: str = Field(min_length=1)
    multiplier: Decimal = Field(Decimal(1), gt=0, description="quantity x this; must stay whole")


class WebhookConfig(_Section):
    """The TradingView webhook (docs/tradingview.md): secret, checks, limits, routing."""

    enabled: bool = Field(
        True, description="serve POST /webhook; false for setups fed only by database rows"
    )
    secret: SecretStr | None = Field(None, description="required unless a local test says so")
    allow_no_secret_for_local_tests: bool = False
    ip_allowlist: bool = Field(False, description="answer 403 to addresses not in allowed_ips")
    allowed_ips: list[str] = Field(
        default_factory=lambda: list(TRADINGVIEW_WEBHOOK_IPS),
        description="addresses or networks (CIDR); TradingView's four by default",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, description="peers whose X-Forwarded-For is believed (CIDR)"
    )
    client_cert: bool = Field(False, description="require the proxy-verified client cert")
    client_cert_header: str = "X-Client-Cert-Subject"
    client_cert_verify_header: str = Field(
        "X-Client-Cert-Verify", description="the proxy's verdict; must say SUCCESS"
    )
    client_cert_subject: dict[str, str] = Field(
        default_factory=lambda: {"CN": "TradingView Webhooks", "O": "TradingView, Inc."},
        description="subject attributes the certificate must carry",
    )
    max_body_bytes: int = Field(65536, ge=256)
    stale_after_s: float = Field(60.0, gt=0, description="older alerts are stored denied")
    clock_skew_s: float = Field(5.0, ge=0)
    dedupe_window_s: float = Field(60.0, gt=0, description="for alerts without a fire time")
    rate_limit_per_minute: int = Field(600, ge=0, description="per address and process; 0 off")
    rate_limit_burst: int = Field(60, ge=1)
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


class _ConventionalEnv(PydanticBaseSettingsSource):
    """``DATABASE_URL`` and ``REDIS_URL``, as every hosting platform sets them."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        del field  # every value comes from __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if url := os.environ.get("DATABASE_URL"):
            out["database"] = {"url": url}
        if url := os.environ.get("REDIS_URL"):
            out["redis"] = {"url": url}
        return out


class Settings(BaseSettings):
    """The whole configuration of one tradebridge installation."""

    model_config = SettingsConfigDict(
        env_prefix="TRADEBRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Path(".tradebridge")
    tradovate: TradovateConfig = Field(default_factory=TradovateConfig)
    tvbridge: TvBridgeConfig = Field(default_factory=TvBridgeConfig)
    accounts: list[AccountConfig] = Field(default_factory=list)
    tokens: TokenConfig = Field(default_factory=TokenConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    dispatcher: DispatcherConfig = Field(default_factory=DispatcherConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    orders: OrdersConfig = Field(default_factory=OrdersConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: arguments, TRADEBRIDGE_ env, conventional env, TOML file."""
        del dotenv_settings, file_secret_settings  # no .env files, no secret directories
        path = _config_file.get()
        if path is None:
            env_path = os.environ.get("TRADEBRIDGE_CONFIG")
            path = Path(env_path) if env_path else DEFAULT_CONFIG_FILE
        toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
        return (init_settings, env_settings, _ConventionalEnv(settings_cls), toml)

    @model_validator(mode="after")
    def _check_accounts(self) -> Settings:
        names = [a.name for a in self.accounts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"accounts listed twice: {', '.join(duplicates)}")
        return self

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
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
