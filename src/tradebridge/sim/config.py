"""Settings of the simulator: its users and accounts, its switches, and its faults.

Everything the reference marks [unverified] is a switch here, so that both readings of an
open question can be reproduced. ``FaultConfig`` can also be changed while the simulator
runs, through ``/_sim/faults`` or ``tradebridge sim fault``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SimAccountConfig(BaseModel):
    """One account: native numeric id, the bridge's ``D...`` id, and the name."""

    model_config = ConfigDict(extra="forbid")

    id: int
    name: str
    bridge_id: str
    readonly: bool = False
    initial_cash: float = 50_000.0


class SimUserConfig(BaseModel):
    """One Tradovate user and the accounts it can trade."""

    model_config = ConfigDict(extra="forbid")

    id: int
    name: str
    password: str
    accounts: list[SimAccountConfig]


def _default_users() -> list[SimUserConfig]:
    return [
        SimUserConfig(
            id=1,
            name="demo",
            password="demo",  # noqa: S106 - the simulator's published demo login
            accounts=[
                SimAccountConfig(id=100001, name="DEMO0000001", bridge_id="D100001"),
                SimAccountConfig(id=100002, name="DEMO0000002", bridge_id="D100002"),
            ],
        ),
        SimUserConfig(
            id=2,
            name="apex",
            password="apex",  # noqa: S106 - the simulator's published demo login
            accounts=[
                SimAccountConfig(id=200010, name="PAAPEX1361890000010", bridge_id="D200010"),
                SimAccountConfig(id=200011, name="PAAPEX1361890000011", bridge_id="D200011"),
            ],
        ),
    ]


class EventNames(BaseModel):
    """The strings of WebSocket ``props`` events; the reference marks them unverified."""

    model_config = ConfigDict(extra="forbid")

    entity_types: dict[str, str] = Field(
        default_factory=lambda: {
            name: name
            for name in (
                "order",
                "orderVersion",
                "executionReport",
                "fill",
                "position",
                "cashBalance",
                "command",
                "commandReport",
                "orderStrategy",
                "orderStrategyLink",
            )
        }
    )
    created: str = "Created"
    updated: str = "Updated"
    deleted: str = "Deleted"


class FaultConfig(BaseModel):
    """Faults, switchable at start and at run time."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    latency_ms: int = Field(0, ge=0, description="added to every API answer")
    error_5xx_rate: float = Field(0.0, ge=0, le=1, description="share answered 5xx, not executed")
    error_5xx_writes_only: bool = Field(False, description="the 5xx share spares GET requests")
    drop_after_accept_rate: float = Field(
        0.0, ge=0, le=1, description="share of accepted orders whose answer is lost"
    )
    # http_401: answered 401 although executed (a token refused mid-flight, §11.2 rule 3);
    # http_4xx: answered ``drop_status`` although executed (a proxy's 408, a 423, a 409)
    drop_mode: Literal["reset", "hang", "http_500", "http_401", "http_4xx"] = "reset"
    drop_status: int = Field(
        408, ge=400, le=499, description="the status 'http_4xx' answers an executed order"
    )
    hang_seconds: float = Field(30.0, ge=0, description="how long 'hang' withholds the answer")
    lockout_429_users: list[str] = Field(
        default_factory=list, description="user names answered 429 with an empty body; '*' = all"
    )
    login_penalty: Literal["off", "ticket", "captcha"] = "off"
    # p-tickets on order commands (reference §2.3: "rapid order modifications, wait-and-resend
    # works"; §8.8 over the WebSocket): "ticket" answers each fresh command with a penalty and
    # executes only a resend carrying that ticket after p-time; "captcha" never executes.
    order_penalty: Literal["off", "ticket", "captcha"] = "off"
    penalty_seconds: int = Field(1, ge=0, description="p-time of a login or order penalty")
    failed_logins_before_423: int = Field(5, ge=1)
    token_lifetime_s: int | None = Field(None, ge=1, description="overrides the token lifetime")
    ws_drop_after_s: float | None = Field(None, gt=0, description="close sockets after this long")
    inject_failure_reason: str | None = Field(None, description="failureReason for next orders")
    inject_failure_text: str = ""
    inject_failure_count: int = Field(0, ge=0)
    bridge_order_post_404: bool = Field(
        False,
        description="the bridge answers every POST /accounts/{id}/orders 404 Not Found and "
        "executes nothing, while the account's GETs work (the field report of §10.1)",
    )
    missing_routes: list[str] = Field(
        default_factory=list,
        description="native routes answered 404 as if undefined, e.g. '*/ldeps', 'command/deps'",
    )

    @field_validator("missing_routes")
    @classmethod
    def _route_patterns(cls, patterns: list[str]) -> list[str]:
        # Written as the client sees them ("/v1/fill/ldeps", "orderVersion/deps"), matched
        # against the lowercased endpoint: "fill/ldeps".
        cleaned = []
        for raw in patterns:
            pattern = raw.strip().strip("/").lower().removeprefix("v1/")
            if not pattern:
                raise ValueError("a route pattern must not be empty")
            cleaned.append(pattern)
        return cleaned


class SimConfig(BaseModel):
    """The whole simulator configuration."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 7
    # Added to every id counter's start. Tradovate never reuses an id; a simulator restarted
    # over a kept ledger must not either (`tradebridge up` sets it from the clock).
    id_offset: int = Field(0, ge=0)
    token_lifetime_s: int = 80 * 60
    users: list[SimUserConfig] = Field(default_factory=_default_users)
    # Known app keys (cid -> sec); empty accepts any app, as a convenience for paper trading.
    app_secrets: dict[int, str] = Field(default_factory=dict)

    # Native dialect switches.
    lowercase_enums: Literal["reject", "accept"] = "reject"
    require_automated: bool = False
    duplicate_cl_ord_id: Literal["accept", "reject"] = "accept"
    unknown_contract_failure: Literal["InvalidContract", "AccessDenied"] = "AccessDenied"
    renew_methods: tuple[Literal["GET", "POST"], ...] = ("GET",)
    # Order strategies (reference §5.8, unverified): the Bracket strategy's type id, what
    # profitTarget / stopLoss mean, and the labels of the orderStrategyLinks.
    strategy_type_id: int = 2
    strategy_units: Literal["points", "ticks"] = "points"
    strategy_breakeven_key: str = "breakeven"
    strategy_entry_label: str = "Entry"
    strategy_stop_label: str = "StopLoss"
    strategy_target_label: str = "ProfitTarget"
    # What ``interruptorderstrategy`` ends (§5.8 lists the endpoint only): the entry still
    # working and every open leg, or the legs alone (the entry keeps working, unfollowed).
    strategy_interrupt_cancels_entry: bool = True

    # TradingView bridge switches.
    capitalised_enums: Literal["error_200", "http_404"] = "error_200"
    require_bid_ask: bool = False
    finished_order_linger_s: float = 60.0
    durations: list[str] = Field(default_factory=lambda: ["Day", "GTC"])
    # Whether bridge orders echo the requestId they were placed with (unverified, §11.3).
    bridge_echo_request_id: bool = False

    # Market and risk.
    price_step_s: float = Field(1.0, gt=0, description="seconds between price path steps")
    liquidity_per_fill: int | None = Field(
        None, ge=1, description="max contracts one fill takes; None = unlimited"
    )
    max_order_qty: int | None = Field(None, ge=1)
    max_position: int | None = Field(None, ge=1, description="per account and contract")
    session_closed: bool = False

    # WebSocket.
    heartbeat_timeout_s: float = Field(15.0, gt=0, description="drop a client silent this long")
    server_heartbeat_s: float = Field(2.5, gt=0)
    authorize_deadline_s: float = Field(10.0, gt=0)
    event_names: EventNames = Field(default_factory=EventNames)

    faults: FaultConfig = Field(default_factory=FaultConfig)
