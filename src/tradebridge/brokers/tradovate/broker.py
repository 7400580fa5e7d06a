"""``TradovateBroker``: the ``Broker`` protocol over Tradovate's native REST API and user sync.

Submit outcomes follow reference §6.3:

* ``orderId`` → the broker id; ``failureReason`` → ``BrokerRejected`` (except
  ``RiskCheckTimeout``/``ExecutionProviderUnavailable``: ``OutcomeUnknown``);
* timeout, disconnect, an unparseable or empty answer, and every status but 400, 404 and the
  HTTP layer's refusals (``NOT_EXECUTED_STATUSES``: 5xx, 429, 423, a proxy's 408, 409, …)
  → ``OutcomeUnknown``;
* a refused connection (nothing sent) → ``BrokerUnavailable``; 404 → ``NotFound``;
  400 → ``BrokerRejected``; a captcha penalty → ``Lockout``;
* a p-ticket without captcha: wait ``p-time`` and resend the identical body plus the ticket
  (the documented protocol; the first request was not executed), at most 3 times;
* 401 after sending → ``OutcomeUnknown``: a 401 is not proof that nothing was executed (a
  token can expire or be rotated while the order is in flight; §6.3 "check whether the
  order exists before resubmitting", §11.2 rule 3). We fetch a different token once (re-read
  or renew) so the lookup can authenticate, and never resend the order here. If it repeats
  on live, the usual cause is 2FA approval or an unstable ``deviceId`` (reference §2.8).
  No token before sending → ``AuthError`` (nothing was sent).

A submit is never retried for any other reason: ``lookup`` decides after ``OutcomeUnknown``.
Reads, cancels and modifies retry transient failures within the retry caps; a flatten
(``liquidateposition``) is sent once like a submit, its lost answer ``OutcomeUnknown``.

Brackets given as distances (``Bracket.relative``) start Tradovate's built-in Bracket order
strategy (``orderStrategy/startorderstrategy``, reference §5.8), so the broker prices the
legs from the real fill. Its ``uuid`` carries our client order id: the strategy is the
submit's proof of existence, looked up by ``uuid`` after a lost answer, and its entry order
(``orderStrategyLink``) is what the row follows. Order reports name the strategy of every
order it placed, derive the legs' parent from the links where Tradovate does not set
``parentId``, and give the entry our client id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tradebridge._aio import single_flight
from tradebridge.brokers.base import AccountInfo, BrokerCapabilities, BrokerOrderEvent
from tradebridge.brokers.budget import foreground
from tradebridge.brokers.http import (
    BrokerHttp,
    HttpAnswer,
    RequestBudget,
    RequestKind,
    http_for,
    outcome_unknown_status,
    raise_for_status,
)
from tradebridge.brokers.lookup import (
    UNSURE,
    bracket_mismatch,
    decide_by_shape,
    legs_bracket,
    shape_mismatch,
)
from tradebridge.brokers.retry import RetryPolicy
from tradebridge.brokers.tradovate import wire
from tradebridge.brokers.tradovate.usersync import UserSync
from tradebridge.config import AccountConfig, TradovateConfig
from tradebridge.domain.clock import utcnow
from tradebridge.domain.commands import (
    CancelOrder,
    FlattenPosition,
    InterruptStrategy,
    ModifyOrder,
    SubmitOrder,
)
from tradebridge.domain.contracts import ContractSymbol, resolve_symbol
from tradebridge.domain.enums import Dialect
from tradebridge.domain.ids import AccountName, BrokerOrderId, ClientOrderId
from tradebridge.domain.reports import (
    BalanceReport,
    FillReport,
    LookupBaseline,
    LookupResult,
    OrderStatusReport,
    PositionReport,
)
from tradebridge.errors import (
    AuthError,
    BrokerError,
    BrokerRejected,
    ConfigError,
    ConnectionLost,
    InvalidInput,
    InvalidSymbol,
    Lockout,
    LookupAmbiguous,
    NotFound,
    OutcomeUnknown,
    RateLimited,
)
from tradebridge.obs.logging import get_logger, redact_text
from tradebridge.store.tokens import StoredToken, TokenProvider, renew_after_sending

_log = get_logger("tradebridge.brokers.tradovate")

MAX_PENALTY_RESENDS = 3
_CHUNK = 50  # ids per ldeps call: keeps URLs and answers small (reference §3 limits)
_CLOCK_SKEW = timedelta(seconds=5)  # our clock versus Tradovate's when matching by time
# A strategy's orders are created after it: strategies this much older than the oldest order
# of a report cannot own any of its orders.
_STRATEGY_LEAD = timedelta(minutes=10)
_STRATEGY_PATH = "/orderStrategy/startorderstrategy"


@dataclass
class _Strategies:
    """The account's order strategies and which orders each one placed."""

    by_id: dict[int, wire.WireOrderStrategy] = field(default_factory=dict)
    of_order: dict[int, int] = field(default_factory=dict)  # order id -> strategy id
    entries: dict[int, int] = field(default_factory=dict)  # strategy id -> entry order id


class TradovateBroker:
    """The native Tradovate adapter (``demo|live.tradovateapi.com/v1``)."""

    dialect = Dialect.NATIVE
    capabilities = BrokerCapabilities(
        brackets=True,
        modify=True,
        flatten=True,
        push_events=True,
        lookup_by_client_order_id=True,
        quotes=False,  # market data is the md WebSocket (reference §8.9), not used here
        leg_time_in_force=True,  # each placeoso bracket has its own timeInForce (§5.3)
    )

    def __init__(
        self,
        config: TradovateConfig,
        accounts: Sequence[AccountConfig],
        tokens: TokenProvider,
        *,
        http: BrokerHttp | None = None,
        today: Callable[[], date] | None = None,
        clock: Callable[[], datetime] = utcnow,
        root_map: dict[str, str] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        budget: RequestBudget | None = None,
        user: str | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        # The Tradovate user these accounts belong to: its name keys the request budget that
        # its logins and every adapter of the process share (None: the token's userId does).
        self.user = user
        self.http = http or http_for(config, "native", budget=budget)
        self._own_http = http is None
        self._configured = {a.name: a for a in accounts if a.dialect is Dialect.NATIVE}
        if not self._configured:
            raise ConfigError("TradovateBroker needs at least one account with dialect native")
        self.clock = clock
        self.today = today or (lambda: self.clock().date())
        self.root_map = root_map
        self.retry = RetryPolicy(config.retry)
        self._sleep = sleep
        self.capabilities = replace(
            type(self).capabilities, brackets_from_fill=config.strategies.use == "relative"
        )
        self._by_name: dict[str, wire.WireAccount] = {}
        self._by_id: dict[int, wire.WireAccount] = {}
        self._contracts: dict[str, wire.WireContract] = {}
        self._contract_names: dict[int, str] = {}
        self._sync: dict[int, UserSync] = {}
        # Orders this process placed (id -> client order id): never someone else's lost submit.
        self._placed: dict[str, ClientOrderId] = {}
        # Per entity, the read route (ldeps, deps, list) that answered last (_children).
        self._read_routes: dict[str, str] = {}
        self._events: asyncio.Queue[BrokerOrderEvent] = asyncio.Queue()
        # What positions_from_sync needs to know per account id: orders sent there that the
        # socket must show final, sends in flight, and until when a lost send keeps it on REST.
        self._sent_orders: dict[int, set[int]] = {}
        self._sending: dict[int, int] = {}
        self._blind_until: dict[int, float] = {}
        # When start_events began (monotonic), and once it has created the sockets.
        self._events_started: float | None = None
        # A socket's first snapshot reports what happened to orders created since (those
        # this adapter may have placed before its socket synced), not to older ones.
        self._first_since = utcnow() - _CLOCK_SKEW
        self._syncs_created = asyncio.Event()
        # Reads in flight that concurrent callers join rather than repeat (single flight):
        # the account list by user (or by account without one), a contract by name.
        self._listing: dict[str, asyncio.Future[list[wire.WireAccount]]] = {}
        self._finding: dict[str, asyncio.Future[wire.WireContract]] = {}

    def __repr__(self) -> str:
        return f"TradovateBroker(url={self.http.base_url!r}, accounts={sorted(self._configured)})"

    # --- lifecycle --------------------------------------------------------------------------
    async def connect(self) -> None:
        """Check the tokens and learn every configured account's id."""
        for name in self._configured:
            await self._account(name)

    async def close(self) -> None:
        """Stop the user-sync sockets and close the HTTP pool.

        Each socket stops in a task of its own: closing from a task being cancelled (a
        shutdown by cancellation), the first stop would re-raise that cancellation and leave
        the other sockets running and the pool open.
        """
        syncs = list(self._sync.values())
        self._sync.clear()
        try:
            await asyncio.gather(*(sync.stop() for sync in syncs), return_exceptions=True)
        finally:
            if self._own_http:
                await self.http.aclose()

    # --- accounts -----------------------------------------------------------------------------
    async def accounts(self) -> list[AccountInfo]:
        """Return the accounts the configured tokens' users can trade.

        One list per user: an account already in a list read by this call is not asked
        about again (the adapter's accounts normally share one user, so one request).
        """
        seen: dict[int, wire.WireAccount] = {}
        for name in self._configured:
            if any(a.name == name for a in seen.values()):
                continue
            for account in await self._load_accounts(name):
                seen[account.id] = account
        return [
            AccountInfo(
                name=AccountName(a.name),
                native_id=a.id,
                bridge_id=(
                    self._configured[a.name].bridge_id if a.name in self._configured else None
                ),
                active=a.active,
                readonly=a.readonly,
            )
            for a in sorted(seen.values(), key=lambda a: a.id)
        ]

    def _check_account_name(self, name: str) -> AccountConfig:
        if name.strip().isdigit():
            raise InvalidInput(
                f"{name!r} looks like a numeric account id; commands name the account "
                "(accountSpec, e.g. DEMO1234567)",
                field="account",
            )
        config = self._configured.get(name)
        if config is None:
            known = ", ".join(sorted(self._configured))
            raise InvalidInput(
                f"account {name!r} is not configured for the native dialect (configured: {known})",
                field="account",
            )
        return config

    async def _account(self, name: str) -> wire.WireAccount:
        config = self._check_account_name(name)
        cached = self._by_name.get(name)
        if cached is not None:
            return cached
        accounts = await self._load_accounts(name)
        found = next((a for a in accounts if a.name == name), None)
        if found is None:
            listed = ", ".join(a.name for a in accounts) or "none (wrong environment?)"
            raise InvalidInput(
                f"account {name!r} is not among the token user's accounts ({listed})",
                field="account",
            )
        if config.native_id is not None and config.native_id != found.id:
            raise InvalidInput(
                f"account {name!r} has id {found.id} at Tradovate, but {config.native_id} "
                "is configured",
                field="account",
            )
        return found

    async def _load_accounts(self, name: str) -> list[wire.WireAccount]:
        """Read the account list of ``name``'s user; concurrent callers share one request."""
        key = f"user:{self.user}" if self.user is not None else f"account:{name}"
        return await single_flight(self._listing, key, lambda: self._fetch_accounts(name))

    async def _fetch_accounts(self, name: str) -> list[wire.WireAccount]:
        with foreground():  # orders join this read: never in the background share
            body = await self._read(name, "/account/list")
        accounts = wire.parse_list(wire.WireAccount, body, "account/list")
        for account in accounts:
            self._by_name[account.name] = account
            self._by_id[account.id] = account
        return accounts

    async def account_id(self, name: str) -> int:
        """Return the native ``accountId`` of an account name (cached)."""
        return (await self._account(name)).id

    async def account_name(self, account_id: int) -> AccountName:
        """Return the account name of a native ``accountId`` (cached)."""
        if account_id not in self._by_id:
            for name in self._configured:
                await self._load_accounts(name)
                if account_id in self._by_id:
                    break
        found = self._by_id.get(account_id)
        if found is None:
            raise NotFound(f"no account with id {account_id} among the token users' accounts")
        return AccountName(found.name)

    # --- contracts ------------------------------------------------------------------------------
    async def resolve_contract(self, symbol: str, account: str) -> ContractSymbol:
        """Resolve any accepted spelling (``MNQ1!``, ``CME_MINI:MNQ1!``, ``MNQ``, ``MNQZ6``)."""
        contract = resolve_symbol(symbol, self.today(), self.root_map)
        await self._contract(contract, account)
        return contract

    async def _contract(self, contract: ContractSymbol, account: str) -> wire.WireContract:
        if contract.is_expired(self.today()):
            raise InvalidSymbol(
                f"{contract.name} expired on {contract.expiry().isoformat()}; nothing was sent"
            )
        cached = self._contracts.get(contract.name) or self._synced_contract(name=contract.name)
        if cached is not None:
            return cached
        return await single_flight(
            self._finding, contract.name, lambda: self._find_contract(contract, account)
        )

    async def _find_contract(self, contract: ContractSymbol, account: str) -> wire.WireContract:
        try:
            with foreground():  # orders join this read (single flight): as _fetch_accounts
                body = await self._read(account, "/contract/find", {"name": contract.name})
        except NotFound as e:
            raise InvalidSymbol(f"Tradovate lists no contract {contract.name}") from e
        if not isinstance(body, dict) or not body.get("id"):
            raise InvalidSymbol(f"Tradovate lists no contract {contract.name}")
        found = wire.parse(wire.WireContract, body, "contract/find")
        self._contracts[found.name] = found
        self._contract_names[found.id] = found.name
        return found

    def _synced_contract(
        self, *, contract_id: int | None = None, name: str | None = None
    ) -> wire.WireContract | None:
        """Return a contract the user-sync snapshots listed (by id or by name), and cache it."""
        for sync in self._sync.values():
            known = sync.mirror.contracts
            found = (
                known.get(contract_id)
                if contract_id is not None
                else next((c for c in known.values() if c.name == name), None)
            )
            if found is not None:
                self._contracts[found.name] = found
                self._contract_names[found.id] = found.name
                return found
        return None

    async def _contract_name(self, contract_id: int, account: str) -> str:
        name = self._contract_names.get(contract_id)
        if name is None and (synced := self._synced_contract(contract_id=contract_id)):
            name = synced.name
        if name is None:
            body = await self._read(account, "/contract/item", {"id": contract_id})
            found = wire.parse(wire.WireContract, body, "contract/item")
            name = self._contract_names[found.id] = found.name
        return name

    # --- submit ---------------------------------------------------------------------------------
    async def submit(self, command: SubmitOrder) -> BrokerOrderId:
        """Place one order exactly once: ``placeorder``, ``placeoso`` with a bracket at prices,
        or a Bracket strategy when the legs are distances from the fill."""
        account = await self._account(command.account)
        contract = await self._contract(command.contract, command.account)
        if command.bracket is not None and command.bracket.relative:
            return await self._start_strategy(command, account)
        if command.bracket:
            path = "/order/placeoso"
            body = wire.place_oso_body(command, account.id, contract.name)
        else:
            path = "/order/placeorder"
            body = wire.place_order_body(command, account.id, contract.name)
        with self._position_move(account.id) as moved:
            data = await self._send_order(command.account, path, body, command.client_order_id)
            result = self._place_result(data, path, command.client_order_id)
            moved.append(int(result))
        self._placed[str(result)] = command.client_order_id
        _log.info(
            "order_placed",
            account=command.account,
            client_order_id=command.client_order_id,
            broker_order_id=result,
        )
        return result

    async def _start_strategy(
        self, command: SubmitOrder, account: wire.WireAccount
    ) -> BrokerOrderId:
        """Start a Bracket strategy; return its entry order's id (what the row follows)."""
        cfg = self.config.strategies
        body = wire.start_strategy_body(
            command, account.id, command.contract.name, type_id=cfg.type_id, units=cfg.units,
            breakeven_key=cfg.breakeven_key,
        )  # fmt: skip
        cid = command.client_order_id
        with self._position_move(account.id) as moved:
            data = await self._send_order(command.account, _STRATEGY_PATH, body, cid)
            strategy = self._strategy_result(data, cid)
            entry = await self._strategy_entry(command, account, strategy)
            moved.append(entry)
        result = BrokerOrderId(str(entry))
        self._placed[str(result)] = cid
        _log.info("order_placed", account=command.account, client_order_id=cid,
                  broker_order_id=result, strategy_id=strategy.id)  # fmt: skip
        return result

    async def _strategy_entry(
        self, command: SubmitOrder, account: wire.WireAccount, strategy: wire.WireOrderStrategy
    ) -> int:
        """Return the entry order of a started strategy; ``OutcomeUnknown`` if not readable."""
        cid = command.client_order_id
        entry: int | None = None
        try:
            for attempt in range(3):  # the entry may be linked a moment after the answer
                found = await self._strategies(command.account, account.id, only={strategy.id})
                entry = found.entries.get(strategy.id)
                if entry is not None:
                    break
                await self._sleep(0.2 * (attempt + 1))
        except (BrokerError, InvalidInput) as e:
            # The strategy exists: whatever the reads say, never a rejection or a resend.
            raise OutcomeUnknown(
                f"strategy {strategy.id} for {cid} started; reading its entry failed ({e}); "
                "look it up",
                client_order_id=cid,
            ) from e
        if entry is None:
            raise OutcomeUnknown(
                f"strategy {strategy.id} for {cid} started but lists no entry order yet; "
                "look it up",
                client_order_id=cid,
            )
        return entry

    def _strategy_result(self, data: Any, client_order_id: str) -> wire.WireOrderStrategy:
        path = _STRATEGY_PATH
        unknown = OutcomeUnknown(
            f"{path} for {client_order_id}: the answer carries neither an orderStrategy nor "
            "an error; look it up",
            client_order_id=client_order_id,
        )
        if not isinstance(data, dict):
            raise unknown
        try:
            result = wire.parse(wire.WireStrategyResult, data, path)
        except BrokerError as e:
            raise unknown from e
        reason = result.failure_reason
        if reason in wire.UNKNOWN_OUTCOME_REASONS:
            raise OutcomeUnknown(f"{path} for {client_order_id}: {reason}; it may exist",
                                 client_order_id=client_order_id)  # fmt: skip
        text = redact_text(result.error_text or result.failure_text or "")
        if (reason not in (None, "", wire.SUCCESS)) or (text and result.order_strategy is None):
            raise BrokerRejected(
                f"Tradovate refused the bracket strategy for {client_order_id}: "
                f"{reason or ''} {text}".strip(),
                reason=reason or "Error",
                text=text,
            )
        strategy = result.order_strategy
        if strategy is None:
            raise unknown
        if strategy.status in wire.STRATEGY_FAILED:
            message = redact_text(strategy.failure_message or "")
            raise BrokerRejected(
                f"Tradovate's bracket strategy {strategy.id} for {client_order_id} failed: "
                f"{strategy.status} {message}".strip(),
                reason=strategy.status or "ExecutionFailed",
                text=message,
            )
        return strategy

    async def _strategies(
        self,
        account: str,
        account_id: int,
        *,
        since: datetime | None = None,
        only: set[int] | None = None,
    ) -> _Strategies:
        """Return the account's strategies (created after ``since``, or ``only`` these) and
        their links: which orders each placed and which one is its entry.

        A broker that serves no strategy routes (404) has none.
        """
        found = _Strategies()
        try:
            body = await self._children(account, "orderStrategy", [account_id], ("deps", "list"))
        except NotFound:
            return found
        for strategy in wire.parse_list(wire.WireOrderStrategy, body, "orderStrategy/deps"):
            if only is not None and strategy.id not in only:
                continue
            if since is not None and strategy.timestamp is not None and strategy.timestamp < since:
                continue
            found.by_id[strategy.id] = strategy
        if not found.by_id:
            return found
        try:
            raw = await self._ldeps(account, "orderStrategyLink", sorted(found.by_id))
        except NotFound:
            return found
        links: dict[int, list[wire.WireOrderStrategyLink]] = {}
        for link in wire.parse_list(wire.WireOrderStrategyLink, raw, "orderStrategyLink/ldeps"):
            if link.order_strategy_id in found.by_id:
                links.setdefault(link.order_strategy_id, []).append(link)
                found.of_order[link.order_id] = link.order_strategy_id
        label = self.config.strategies.entry_label
        for strategy_id, own in links.items():
            labelled = [link.order_id for link in own if link.label == label]
            found.entries[strategy_id] = min(labelled or [link.order_id for link in own])
        return found

    def _place_result(self, data: Any, path: str, client_order_id: str) -> BrokerOrderId:
        unknown = OutcomeUnknown(
            f"{path} for {client_order_id}: the answer carries neither orderId nor "
            "failureReason; look the order up",
            client_order_id=client_order_id,
        )
        if not isinstance(data, dict):
            raise unknown
        try:
            result = wire.parse(wire.WirePlaceResult, data, path)
        except BrokerError as e:
            raise unknown from e
        if result.failed:
            reason = result.failure_reason or "UnknownReason"
            text = redact_text(result.failure_text or "")
            if reason in wire.UNKNOWN_OUTCOME_REASONS:
                raise OutcomeUnknown(
                    f"{path} for {client_order_id}: {reason}; the order may exist",
                    client_order_id=client_order_id,
                )
            raise BrokerRejected(
                f"Tradovate rejected {client_order_id}: {reason} {text}".strip(),
                reason=reason,
                text=text,
            )
        if result.order_id is None:
            if data.get("errorText"):
                text = redact_text(str(data["errorText"]))
                raise BrokerRejected(
                    f"Tradovate rejected {client_order_id}: {text}", reason="Error", text=text
                )
            raise unknown
        return BrokerOrderId(str(result.order_id))

    async def _send_order(
        self,
        account: str,
        path: str,
        body: dict[str, Any],
        client_order_id: str,
        *,
        audited: bool = True,
    ) -> Any:
        """Send an order command once (p-ticket resends aside); a possibly executed failure
        is ``OutcomeUnknown``. ``audited=False``: ``client_order_id`` only names the command
        in errors and is not filed as a client order id (a liquidation has none)."""
        token = await self.tokens.token(account)
        extra: dict[str, Any] = {}
        for _ in range(MAX_PENALTY_RESENDS + 1):
            try:
                answer = await self.http.request(
                    "POST",
                    path,
                    json_body={**body, **extra},
                    token=token.access_token,
                    budget_key=self._budget_key(token, account),
                    client_order_id=client_order_id if audited else None,
                    account=account,
                )
            except ConnectionLost as e:
                raise OutcomeUnknown(
                    f"{path} for {client_order_id}: {e}; the order may exist",
                    client_order_id=client_order_id,
                ) from e
            # BrokerUnavailable (connection refused, nothing sent) propagates as is.
            if answer.status == 401:
                raise await self._refused_after_sending(account, path, token, client_order_id)
            self._check_submit_status(answer, path, client_order_id)
            data = answer.body
            if isinstance(data, dict) and "p-ticket" in data:
                if data.get("p-captcha"):
                    until = self.clock() + timedelta(hours=1)
                    raise Lockout(f"{path}: captcha penalty; stop trading this user", until=until)
                wait = float(data.get("p-time") or 0)
                _log.warning("order_penalty", client_order_id=client_order_id, wait_s=wait)
                await self._sleep(wait)
                extra = {"p-ticket": data["p-ticket"]}
                continue
            return data
        raise OutcomeUnknown(
            f"{path} for {client_order_id}: still penalised after {MAX_PENALTY_RESENDS} resends",
            client_order_id=client_order_id,
        )

    async def _refused_after_sending(
        self, account: str, path: str, refused: StoredToken, client_order_id: str
    ) -> OutcomeUnknown:
        """Renew a token refused after an order was sent; return the error to raise."""
        renewal = await renew_after_sending(self.tokens, account, refused)
        return OutcomeUnknown(
            f"{path} for {client_order_id}: HTTP 401 after sending; the order may exist "
            f"({renewal}); look it up before sending it again (on live, a repeated 401 "
            "means: check the 2FA approval email, then the deviceId)",
            client_order_id=client_order_id,
        )

    def _check_submit_status(self, answer: HttpAnswer, path: str, client_order_id: str) -> None:
        status = answer.status
        if status == 200:
            return
        if outcome_unknown_status(status):  # 429, 5xx, a proxy's 408, a 423 (the listener
            # records its lockout), anything not proof that nothing executed
            raise OutcomeUnknown(
                f"{path} for {client_order_id}: HTTP {status} after sending; the order may exist",
                client_order_id=client_order_id,
            )
        raise_for_status(answer, f"{path} for {client_order_id}")

    # --- lookup ---------------------------------------------------------------------------------
    async def lookup_baseline(self, command: SubmitOrder) -> LookupBaseline | None:
        """Return None: every order this client places carries its ``clOrdId`` (§11.3)."""
        del command
        return None

    async def lookup(
        self,
        command: SubmitOrder,
        ts_sent: datetime,
        *,
        baseline: LookupBaseline | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> LookupResult:
        """Find a submit whose outcome is unknown: by ``clOrdId``, else by shape (§11.3).

        "Absent" is only concluded once ``lookup_absent_after_s`` have passed since the
        submit (a slow acceptance may still be on its way); until then we wait and look again.
        """
        result = await self._look(command, ts_sent, baseline, exclude)
        wait = self.config.lookup_absent_after_s - (self.clock() - ts_sent).total_seconds()
        if result.found is None and wait > 0:
            await self._sleep(wait)
            result = await self._look(command, ts_sent, baseline, exclude)
        return result

    async def _look(
        self,
        command: SubmitOrder,
        ts_sent: datetime,
        baseline: LookupBaseline | None,
        exclude: frozenset[str],
    ) -> LookupResult:
        account = await self._account(command.account)
        contract = await self._contract(command.contract, command.account)
        if command.bracket is not None and command.bracket.relative:
            return await self._look_strategy(command, account, contract, ts_sent, exclude)
        orders = [o for o in await self._orders(command.account, account.id)
                  if o.contract_id == contract.id]  # fmt: skip
        since = ts_sent - _CLOCK_SKEW
        # Entries that may be this submit's (bracket legs are judged through their entry).
        entries = [
            o
            for o in orders
            if o.parent_id is None and (o.timestamp is None or o.timestamp >= since)
        ]
        # One carrying our clOrdId is ours whatever its time says (a host clock running ahead
        # of Tradovate's makes our own order look created before we sent it), as far back as
        # a strategy's uuid is looked for; the newest, should a reused signal id have two.
        # Not one the ledger gives to another row, or to a deleted row of this signal id.
        earlier = [
            o
            for o in orders
            if o.parent_id is None
            and o.timestamp is not None
            and ts_sent - _STRATEGY_LEAD <= o.timestamp < since
        ]
        entry_ids = {o.id for o in entries}
        legs = [o for o in orders if o.parent_id in entry_ids]
        reports = await self._reports(command.account, [*entries, *earlier, *legs])
        by_id = {int(r.broker_order_id): r for r in reports}
        cid = command.client_order_id
        exact = [o.id for o in (*entries, *earlier)
                 if by_id[o.id].client_order_id == cid and str(o.id) not in exclude]  # fmt: skip
        if exact:
            return LookupResult(cid, by_id[max(exact)])
        matches: list[OrderStatusReport] = []
        unsure: list[str] = []
        evidence: list[str] = []
        for order in entries:
            report = by_id[order.id]
            oid = str(order.id)
            why = self._not_ours(report, command, exclude, baseline)
            if why is None and (order.timestamp is None or order.timestamp < ts_sent):
                # Created just before we sent (within the clock skew we allow) or at an unknown
                # time: it may be ours on a skewed clock, or someone else's; we cannot tell.
                created = order.timestamp.isoformat() if order.timestamp else "at an unknown time"
                why = f"{UNSURE}: created {created}, the submit left at {ts_sent.isoformat()}"
            if why is None:
                leg_reports = [by_id[leg.id] for leg in legs if leg.parent_id == order.id]
                why = bracket_mismatch(command, legs_bracket(leg_reports))
            if why is None and self.config.lookup_by_shape == "review":
                # Every order we place carries our clOrdId; one without any may be ours only
                # if Tradovate dropped it. By default a human decides (tradovate.lookup_by_shape).
                why = f"{UNSURE}: same shape and bracket, no clOrdId"
            if why is None:
                matches.append(report)
            elif why.startswith(UNSURE):
                unsure.append(oid)
            if why is not None:
                evidence.append(f"{oid}: {why}")
        return decide_by_shape(cid, matches, unsure, tuple(evidence))

    async def _look_strategy(
        self,
        command: SubmitOrder,
        account: wire.WireAccount,
        contract: wire.WireContract,
        ts_sent: datetime,
        exclude: frozenset[str],
    ) -> LookupResult:
        """Find a strategy submit by its ``uuid``; never conclude absent past a doubt.

        A strategy with our ``uuid`` is ours: its entry order is adopted (no entry linked
        yet is ambiguous, never absent). Where none carries it, a strategy on the contract and
        side without any ``uuid`` created since the submit may be ours if Tradovate dropped
        the ``uuid``: that is ambiguous too. Only nothing of either kind is absent.
        """
        cid = command.client_order_id
        since = ts_sent - _CLOCK_SKEW - _STRATEGY_LEAD
        found = await self._strategies(command.account, account.id, since=since)
        ours = [s for s in found.by_id.values()
                if s.uuid == cid and str(found.entries.get(s.id)) not in exclude]  # fmt: skip
        evidence = [f"strategy {s.id}: uuid {s.uuid}" for s in ours]
        if len(ours) == 1:
            strategy = ours[0]
            entry = found.entries.get(strategy.id)
            if entry is None:
                raise LookupAmbiguous(
                    f"lookup of {cid}: strategy {strategy.id} carries our uuid but lists no "
                    "entry order; not resending: review by hand",
                    client_order_id=cid, candidates=(f"strategy {strategy.id}",),
                    evidence=tuple(evidence),
                )  # fmt: skip
            body = await self._read(command.account, "/order/item", {"id": entry})
            order = wire.parse(wire.WireOrder, body, "order/item")
            report = (await self._reports(command.account, [order]))[0]
            return LookupResult(cid, report, evidence=tuple(evidence))
        if len(ours) > 1:
            ids = tuple(f"strategy {s.id}" for s in ours)
            raise LookupAmbiguous(f"lookup of {cid}: {len(ours)} strategies carry our uuid",
                                  client_order_id=cid, candidates=ids,
                                  evidence=tuple(evidence))  # fmt: skip
        action = wire.SIDES[command.side]
        unsure: list[str] = []
        for strategy in found.by_id.values():
            entry = found.entries.get(strategy.id)
            why = None
            if strategy.uuid:
                why = f"carries another uuid ({strategy.uuid})"
            elif strategy.contract_id not in (None, contract.id) or strategy.action != action:
                why = "another contract or side"
            elif entry is not None and (str(entry) in exclude or str(entry) in self._placed):
                why = "its entry belongs to another row"
            elif strategy.timestamp is not None and strategy.timestamp < ts_sent - _CLOCK_SKEW:
                why = "started before the submit"
            if why is None:
                unsure.append(f"strategy {strategy.id}")
                why = f"{UNSURE}: no uuid, same contract and side, started since the submit"
            evidence.append(f"strategy {strategy.id}: {why}")
        return decide_by_shape(cid, [], unsure, tuple(evidence))

    def _not_ours(
        self,
        report: OrderStatusReport,
        command: SubmitOrder,
        exclude: frozenset[str],
        baseline: LookupBaseline | None,
    ) -> str | None:
        """Return why an order of the contract cannot be this submit's, else None."""
        oid = str(report.broker_order_id)
        if report.client_order_id is not None:
            return f"carries another clOrdId ({report.client_order_id})"
        if oid in exclude:
            return "owned by another ledger row"
        if oid in self._placed:
            return f"placed by this process for {self._placed[oid]}"
        if baseline is not None and baseline.existed_before(oid):
            return "existed before the submit"
        return shape_mismatch(report, command)

    # --- cancel, modify, flatten ---------------------------------------------------------------
    async def cancel(self, command: CancelOrder) -> None:
        """Cancel a working order; ``TooLate`` surfaces as ``BrokerRejected``."""
        self._check_account_name(command.account)
        async with self._too_late_is_a_fill(command.account):
            await self._command(
                command.account, "/order/cancelorder",
                wire.cancel_order_body(command.broker_order_id),
            )  # fmt: skip

    async def modify(self, command: ModifyOrder) -> None:
        """Change a working order's quantity or prices."""
        self._check_account_name(command.account)
        async with self._too_late_is_a_fill(command.account):
            await self._command(
                command.account, "/order/modifyorder", wire.modify_order_body(command)
            )

    @contextlib.asynccontextmanager
    async def _too_late_is_a_fill(self, account: AccountName) -> AsyncIterator[None]:
        """A cancel or modify refused as too late met a fill the socket may not have shown
        yet: the account's positions come from REST for ``sync_blind_s`` (an exit sized
        from them must see it, ``dispatch/_legs.py``)."""
        try:
            yield
        except BrokerRejected as e:
            if e.reason == "TooLate":
                found = await self._account(account)
                self._blind_until[found.id] = time.monotonic() + self.config.sync_blind_s
            raise

    async def interrupt_strategy(self, command: InterruptStrategy) -> None:
        """Stop an order strategy (``orderStrategy/interruptorderstrategy``)."""
        self._check_account_name(command.account)
        path = "/orderStrategy/interruptorderstrategy"
        data = await self._write(
            command.account, path, {"orderStrategyId": int(command.strategy_id)}
        )
        if isinstance(data, dict) and (data.get("errorText") or data.get("failureReason")):
            text = redact_text(str(data.get("errorText") or data.get("failureText") or ""))
            raise BrokerRejected(
                f"Tradovate refused to interrupt strategy {command.strategy_id}: {text}".strip(),
                reason=str(data.get("failureReason") or "Error"),
                text=text,
            )

    async def flatten(self, command: FlattenPosition) -> None:
        """Cancel working orders on the contract and close the position (``admin: false``).

        Sent once, like an order: a lost answer (a reset, a 5xx, a 401 after sending) is
        ``OutcomeUnknown``, never resent here, since the first request may have closed the
        position already; whoever reruns the flatten reads the position first
        (``dispatch/placement.py``). Only what is proven not executed is sent again: a
        refused connection, a p-ticket penalty and ``AnotherCommandPending`` (§2.3, §6.3).
        """
        account = await self._account(command.account)
        contract = await self._contract(command.contract, command.account)
        path = "/order/liquidateposition"
        label = f"the flatten of {command.contract.name}"
        body = wire.liquidate_body(account.id, contract.id)

        async def once() -> Any:
            data = await self._send_order(command.account, path, body, label, audited=False)
            if isinstance(data, dict) and data.get("failureReason") == "AnotherCommandPending":
                raise RateLimited(f"{path}: another command is pending", retry_after=0.5)
            return data

        with self._position_move(account.id) as moved:
            data = await self.retry.run(once)
            result = wire.parse(wire.WirePlaceResult, data, "order/liquidateposition")
            if result.order_id is not None:
                moved.append(result.order_id)
        if result.failed:
            raise BrokerRejected(
                f"Tradovate refused to flatten {command.contract.name} on {command.account}: "
                f"{result.failure_reason} {result.failure_text or ''}".strip(),
                reason=result.failure_reason or "UnknownReason",
                text=result.failure_text or "",
            )

    async def _command(self, account: str, path: str, body: dict[str, Any]) -> None:
        data = await self._write(account, path, body)
        result = wire.parse(wire.WireCommandResult, data, path)
        if result.failed:
            reason = result.failure_reason or "UnknownReason"
            raise BrokerRejected(
                f"Tradovate refused {path} for order {body.get('orderId')}: "
                f"{reason} {result.failure_text or ''}".strip(),
                reason=reason,
                text=result.failure_text or "",
            )

    async def _write(self, account: str, path: str, body: dict[str, Any]) -> Any:
        # Cancels and modifies carry absolute targets, so resending one after a lost answer
        # cannot double anything (a liquidation is not sent here: ``flatten``);
        # AnotherCommandPending waits briefly. A p-ticket penalty (not executed) is waited
        # out and the identical body resent plus the ticket (reference §2.3, §5.5): without
        # it Tradovate penalises it again.
        ticket: dict[str, Any] = {}

        async def once() -> Any:
            data = await self._authorized("POST", account, path, json_body={**body, **ticket})
            if isinstance(data, dict) and data.get("failureReason") == "AnotherCommandPending":
                raise RateLimited(f"{path}: another command is pending", retry_after=0.5)
            if isinstance(data, dict) and "p-ticket" in data and not data.get("p-captcha"):
                ticket["p-ticket"] = data["p-ticket"]
                raise RateLimited(f"{path}: penalty", retry_after=float(data.get("p-time") or 1))
            return data

        return await self.retry.run(once)

    # --- reads ------------------------------------------------------------------------------------
    async def _read(self, account: str, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self.retry.run(lambda: self._authorized("GET", account, path, params=params))

    async def _authorized(
        self,
        method: str,
        account: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        kind: RequestKind | None = None,
    ) -> Any:
        async def send(token: StoredToken) -> HttpAnswer:
            return await self.http.request(
                method,
                path,
                params=params,
                json_body=json_body,
                token=token.access_token,
                account=account,
                budget_key=self._budget_key(token, account),
                kind=kind,
            )

        token = await self.tokens.token(account)
        answer = await send(token)
        if answer.status == 401:
            answer = await send(await self.tokens.after_refused(account, token))
        raise_for_status(answer, f"{method} {path}")
        if (
            isinstance(answer.body, dict)
            and "p-ticket" in answer.body
            and answer.body.get("p-captcha")
        ):
            raise Lockout(f"{path}: captcha penalty", until=self.clock() + timedelta(hours=1))
        return answer.body

    def _budget_key(self, token: StoredToken, account: str) -> str:
        if self.user is not None:
            return self.user
        return f"user:{token.user_id}" if token.user_id is not None else f"account:{account}"

    async def _orders(self, account: str, account_id: int) -> list[wire.WireOrder]:
        body = await self._children(account, "order", [account_id], ("deps", "list"))
        return wire.parse_list(wire.WireOrder, body, "order/deps")

    async def _ldeps(self, account: str, entity: str, ids: Sequence[int]) -> list[Any]:
        return await self._children(account, entity, ids, ("ldeps", "deps", "list"))

    async def _children(
        self, account: str, entity: str, ids: Sequence[int], routes: tuple[str, ...]
    ) -> list[Any]:
        """Return the ``entity`` children of the masters ``ids`` by the first route served.

        A broker or proxy may not serve ``ldeps`` or ``deps`` (HTTP 404: "the endpoint
        itself is not defined", reference §6.2); then the next route is asked, and the one
        that answers is remembered, so later reads go straight there. Only a 404 moves on:
        any other error is the broker's answer and propagates.
        """
        if not ids:
            return []
        learnt = self._read_routes.get(entity)
        if learnt in routes:
            routes = routes[routes.index(learnt) :]
        for route in routes:
            try:
                found = await self._children_by(account, entity, ids, route)
            except NotFound as e:
                if route == routes[-1]:
                    raise NotFound(
                        f"{entity}: the broker serves none of the routes {'/'.join(routes)} "
                        "(HTTP 404 on each; run `tradebridge doctor`)"
                    ) from e
                _log.warning("read_route_missing", account=account, entity=entity, route=route)
                continue
            self._read_routes[entity] = route
            return found
        raise AssertionError("routes is never empty")  # pragma: no cover

    async def _children_by(
        self, account: str, entity: str, ids: Sequence[int], route: str
    ) -> list[Any]:
        out: list[Any] = []
        if route == "ldeps":
            for start in range(0, len(ids), _CHUNK):
                chunk = ",".join(str(i) for i in ids[start : start + _CHUNK])
                body = await self._read(account, f"/{entity}/ldeps", {"masterids": chunk})
                out.extend(self._json_list(body, f"{entity}/ldeps"))
        elif route == "deps":
            for master in ids:
                body = await self._read(account, f"/{entity}/deps", {"masterid": master})
                out.extend(self._json_list(body, f"{entity}/deps"))
        else:
            # The last resort: a list may be cut short (reference §3). Items that are not
            # objects are kept, so that parsing reports the broken answer.
            body = await self._read(account, f"/{entity}/list")
            field, wanted = self._master_field(entity), set(ids)
            out = [
                item
                for item in self._json_list(body, f"{entity}/list")
                if not isinstance(item, dict) or item.get(field) in wanted
            ]
        return out

    @staticmethod
    def _master_field(entity: str) -> str:
        # Orders, positions and balances belong to an account; the rest we read (orderVersion,
        # fill, command, executionReport) to an order (reference §3, §4.4-§4.7).
        if entity == "orderStrategyLink":
            return "orderStrategyId"
        owned_by_account = ("order", "position", "cashBalance", "orderStrategy")
        return "accountId" if entity in owned_by_account else "orderId"

    @staticmethod
    def _json_list(body: Any, what: str) -> list[Any]:
        if not isinstance(body, list):
            raise BrokerError(f"{what}: expected a JSON list")
        return body

    async def _reports(
        self, account: str, orders: Sequence[wire.WireOrder]
    ) -> list[OrderStatusReport]:
        if not orders:
            return []
        ids = [o.id for o in orders]
        versions: dict[int, wire.WireOrderVersion] = {}
        for v in wire.parse_list(
            wire.WireOrderVersion,
            await self._ldeps(account, "orderVersion", ids),
            "orderVersion/ldeps",
        ):
            if v.order_id not in versions or v.id > versions[v.order_id].id:
                versions[v.order_id] = v
        fills: dict[int, list[wire.WireFill]] = {}
        for f in wire.parse_list(
            wire.WireFill, await self._ldeps(account, "fill", ids), "fill/ldeps"
        ):
            if f.active:
                fills.setdefault(f.order_id, []).append(f)
        cl_ord_ids: dict[int, str] = {}
        for c in sorted(
            wire.parse_list(
                wire.WireCommand, await self._ldeps(account, "command", ids), "command/ldeps"
            ),
            key=lambda c: c.id,
        ):
            if c.cl_ord_id and c.order_id not in cl_ord_ids:
                cl_ord_ids[c.order_id] = c.cl_ord_id  # the New command carries ours
        reasons: dict[int, str] = {}
        rejected = [o.id for o in orders if o.ord_status == "Rejected"]
        if rejected:
            for r in wire.parse_list(
                wire.WireExecutionReport,
                await self._ldeps(account, "executionReport", rejected),
                "executionReport/ldeps",
            ):
                if r.reject_reason or r.text:
                    reasons[r.order_id] = " ".join(x for x in (r.reject_reason, r.text) if x)
        since = min((o.timestamp for o in orders if o.timestamp is not None), default=None)
        strategies = await self._strategies(
            account, orders[0].account_id,
            since=None if since is None else since - _STRATEGY_LEAD,
        )  # fmt: skip
        reports = []
        for order in orders:
            version = versions.get(order.id)
            strategy_id = strategies.of_order.get(order.id)
            parent = order.parent_id
            cid = cl_ord_ids.get(order.id)
            if strategy_id is not None:
                entry = strategies.entries.get(strategy_id)
                uuid = strategies.by_id[strategy_id].uuid
                if entry is not None and entry != order.id and parent is None:
                    parent = entry  # a leg: where Tradovate sets no parentId, the link says
                if uuid and cid is None:
                    cid = uuid if entry == order.id else uuid + wire.STRATEGY_LEG_SUFFIX
            order_fills = fills.get(order.id, [])
            filled = sum(f.qty for f in order_fills)
            avg = (
                sum((f.price * f.qty for f in order_fills), Decimal(0)) / filled if filled else None
            )
            reason = reasons.get(order.id, "")
            report = self._order_report(
                account, order, version, filled, cid, parent, strategy_id, avg=avg, reason=reason
            )
            reports.append(await report)
        return reports

    async def _order_report(
        self,
        account: str,
        order: wire.WireOrder,
        version: wire.WireOrderVersion | None,
        filled: int,
        cid: str | None,
        parent: int | None,
        strategy_id: int | None,
        *,
        avg: Decimal | None = None,
        reason: str = "",
    ) -> OrderStatusReport:
        """Return one order as a report: from REST's entities or the socket's mirror."""
        quantity = version.order_qty if version else filled
        return OrderStatusReport(
            broker_order_id=BrokerOrderId(str(order.id)),
            account=AccountName(account),
            contract=await self._contract_name(order.contract_id, account),
            side=wire.side_from_wire(order.action),
            order_type=wire.order_type_from_wire(version.order_type if version else ""),
            quantity=quantity,
            status=wire.order_status(order.ord_status, filled, quantity),
            filled_qty=filled,
            avg_fill_price=avg,
            limit_price=version.price if version else None,
            stop_price=version.stop_price if version else None,
            client_order_id=None if cid is None else ClientOrderId(cid),
            reason=reason,
            ts_created=order.timestamp,
            parent_id=None if parent is None else BrokerOrderId(str(parent)),
            strategy_id=None if strategy_id is None else str(strategy_id),
            oco_id=None if order.oco_id is None else str(order.oco_id),
            broker_order_type=wire.unplaced_order_type(version.order_type) if version else None,
        )

    async def order_reports(self, account: AccountName) -> list[OrderStatusReport]:
        """Return the account's orders with quantities, prices, fills and our ids."""
        found = await self._account(account)
        return await self._reports(account, await self._orders(account, found.id))

    async def working_orders(self, account: AccountName) -> list[OrderStatusReport]:
        """Return the account's orders not final: from the user-sync socket when it is
        current (``positions_from_sync``); none while a socket follows the account but cannot
        tell (down, reconnecting, a send of this process in flight, an event still to come);
        from REST (``order_reports``) only where no socket follows it.

        The risk rules count these ahead of an order. Read from REST they cost four to six
        reads of the user's budget per order (orders, versions, fills, commands), so a
        fan-out during a socket outage would wait minutes for its reads: the ledger's own
        rows are still counted meanwhile (docs/risk.md).
        """
        found = await self._account(account)
        mirrored = self._synced_working(found.id)
        if mirrored is None and await self._first_sync(found.id):
            mirrored = self._synced_working(found.id)
        if mirrored is None:
            if self.config.positions_from_sync and self._sync_of(found.id) is not None:
                return []
            return [o for o in await self.order_reports(account) if not o.status.is_terminal]
        sync, working = mirrored
        mirror = sync.mirror
        reports = []
        for order, version, filled, entry in working:
            cid, strategy_id = mirror.client_id(order.id), mirror.strategy_of.get(order.id)
            reports.append(
                await self._order_report(account, order, version, filled, cid, entry, strategy_id)
            )
        return reports

    def _sync_of(self, account_id: int) -> UserSync | None:
        """Return the user-sync socket of this adapter that follows ``account_id``, if any."""
        return next((s for s in self._sync.values() if account_id in s.mirror.account_names), None)

    def _synced_working(
        self, account_id: int
    ) -> (
        tuple[UserSync, list[tuple[wire.WireOrder, wire.WireOrderVersion, int, int | None]]] | None
    ):
        """Return the account's socket and its orders not final, or None: the socket is not
        current, ``positions_from_sync`` is off, or the mirror cannot tell.

        Unlike for its positions, the orders this process sent need not be final (they are
        the ledger's rows, counted from the ledger), only known: their bracket legs are not
        rows, and come with them.
        """
        if not self.config.positions_from_sync or self._sending.get(account_id):
            return None
        sync = self._sync_of(account_id)
        if sync is None or not sync.current():
            return None
        if any(i not in sync.mirror.orders for i in self._sent_orders.get(account_id, ())):
            return None
        working = sync.mirror.working_of(account_id)
        return None if working is None else (sync, working)

    async def order_report(
        self, account: AccountName, broker_order_id: BrokerOrderId
    ) -> OrderStatusReport:
        """Return one order; ``NotFound`` if the broker has no such order on the account."""
        found = await self._account(account)
        try:
            order_id = int(broker_order_id)
        except ValueError as e:
            raise NotFound(f"{broker_order_id!r} is not a native order id") from e
        body = await self._read(account, "/order/item", {"id": order_id})
        if not isinstance(body, dict) or not body:
            raise NotFound(f"no order {order_id}")
        order = wire.parse(wire.WireOrder, body, "order/item")
        if order.account_id != found.id:
            raise NotFound(f"order {order_id} does not belong to {account}")
        return (await self._reports(account, [order]))[0]

    async def fill_reports(self, account: AccountName) -> list[FillReport]:
        """Return the account's fills."""
        found = await self._account(account)
        orders = await self._orders(account, found.id)
        fills = wire.parse_list(
            wire.WireFill, await self._ldeps(account, "fill", [o.id for o in orders]), "fill/ldeps"
        )
        return [
            FillReport(
                fill_id=str(f.id),
                broker_order_id=BrokerOrderId(str(f.order_id)),
                account=account,
                contract=await self._contract_name(f.contract_id, account),
                side=wire.side_from_wire(f.action),
                qty=f.qty,
                price=f.price,
                ts_event=f.timestamp,
            )
            for f in sorted(fills, key=lambda f: f.id)
            if f.active
        ]

    async def position_reports(
        self, account: AccountName, *, fresh: bool = False
    ) -> list[PositionReport]:
        """Return the account's non-flat positions: from the user-sync socket when it is
        current for the account (``positions_from_sync``) and ``fresh`` is not asked, else
        from REST."""
        found = await self._account(account)
        positions = None if fresh else self._synced_positions(found.id)
        if positions is None and not fresh and await self._first_sync(found.id):
            positions = self._synced_positions(found.id)
        if positions is None:
            body = await self._children(account, "position", [found.id], ("deps", "list"))
            positions = wire.parse_list(wire.WirePosition, body, "position/deps")
        return [
            PositionReport(
                account=account,
                contract=await self._contract_name(p.contract_id, account),
                net_qty=p.net_pos,
                avg_price=p.net_price,
            )
            for p in positions
            if p.net_pos != 0
        ]

    def _synced_positions(self, account_id: int) -> list[wire.WirePosition] | None:
        """Return the account's positions as the socket has them, or None: not current, a
        send in flight or lately lost, or ``positions_from_sync`` off."""
        if not self.config.positions_from_sync or self._sending.get(account_id):
            return None
        if time.monotonic() < self._blind_until.get(account_id, 0.0):
            return None
        sync = self._sync_of(account_id)
        if sync is None or not sync.current():
            return None
        sent = self._sent_orders.get(account_id, set())
        positions = sync.mirror.positions_of(account_id, sent)
        if positions is not None:
            sent.clear()  # all final: nothing left to wait for
        return positions

    async def _first_sync(self, account_id: int) -> bool:
        """Wait for the account's socket to send its first snapshot, if it is starting (at
        most ``sync_start_wait_s`` after the sockets started); return whether it synced.

        A restart's first alerts would otherwise read each account's positions over REST,
        one budgeted read per account, while the socket is a few hundred ms from answering.
        """
        started = self._events_started
        if started is None or not self.config.positions_from_sync:
            return False
        remaining = started + self.config.sync_start_wait_s - time.monotonic()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                await self._syncs_created.wait()
                sync = next(
                    (s for s in self._sync.values() if account_id in s.mirror.account_names),
                    None,
                )
                if sync is None or sync.ever_synced:
                    return False  # not followed, or synced before and down now: REST
                await sync.synced.wait()
        except TimeoutError:
            return False
        return True

    @contextlib.contextmanager
    def _position_move(self, account_id: int) -> Iterator[list[int]]:
        """Mark a send that may move the account's position: while in flight, and for
        ``sync_blind_s`` if it fails, positions come from REST; the order ids the caller
        appends must show final on the socket before its positions are trusted again."""
        self._sending[account_id] = self._sending.get(account_id, 0) + 1
        moved: list[int] = []
        try:
            yield moved
        except (BrokerRejected, InvalidInput):
            raise  # refused: nothing was placed
        except BaseException:
            self._blind_until[account_id] = time.monotonic() + self.config.sync_blind_s
            raise
        finally:
            self._sending[account_id] -= 1
            self._sent_orders.setdefault(account_id, set()).update(moved)

    async def balance(self, account: AccountName) -> BalanceReport:
        """Return the account's cash and open P&L (``cashBalance/getcashbalancesnapshot``)."""
        found = await self._account(account)
        path = "/cashBalance/getcashbalancesnapshot"
        # A read sent as POST (reference §4.8): it counts as a read in the user's budget.
        body = await self.retry.run(
            lambda: self._authorized("POST", account, path, json_body={"accountId": found.id},
                                     kind=RequestKind.READ)
        )  # fmt: skip
        snapshot = wire.parse(wire.WireCashSnapshot, body, path)
        if snapshot.error_text or snapshot.total_cash_value is None:
            raise BrokerError(f"{path} for {account}: {snapshot.error_text or 'no totalCashValue'}")
        open_pnl = snapshot.open_pnl
        if open_pnl is None:
            open_pnl = (snapshot.net_liq or snapshot.total_cash_value) - snapshot.total_cash_value
        return BalanceReport(account, snapshot.total_cash_value, open_pnl)

    # --- events -----------------------------------------------------------------------------------
    async def start_events(self) -> None:
        """Open one user-sync WebSocket per Tradovate user of the configured accounts."""
        if self._events_started is None:
            self._events_started = time.monotonic()
        try:
            await self._start_syncs()
        finally:
            self._syncs_created.set()  # position reads stop waiting for it either way

    async def _start_syncs(self) -> None:
        for name in self._configured:
            account = await self._account(name)
            user_id = account.user_id
            if user_id is None:
                token = await self.tokens.token(name)
                user_id = token.user_id
            if user_id is None:
                raise AuthError(f"cannot tell the Tradovate user of {name} (no userId anywhere)")
            if user_id in self._sync:
                continue
            sync = UserSync(
                self.config,
                user_id=user_id,
                account_name=name,
                tokens=self.tokens,
                on_event=self._events.put_nowait,
                account_names=self._account_names_by_id(),
                first_since=self._first_since,
            )
            self._sync[user_id] = sync
            await sync.start()

    def _account_names_by_id(self) -> dict[int, str]:
        return {a.id: a.name for a in self._by_id.values()}

    async def events(self) -> AsyncIterator[BrokerOrderEvent]:
        """Yield order events from the user-sync sockets (started on first use)."""
        if not self._sync:
            await self.start_events()
        while True:
            yield await self._events.get()

    def user_syncs(self) -> list[UserSync]:
        """Return the running user-sync clients (for health checks)."""
        return list(self._sync.values())
