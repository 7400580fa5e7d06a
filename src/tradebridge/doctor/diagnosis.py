"""``tradebridge doctor``: find out why orders do not reach Tradovate, in plain words.

Checks run in order, each with a verdict and the fix: Redis, the token, the broker and the
token together, the account's name and id, the contract, an order shape for the dialect.
For a bridge account (or a failed bridge request: method, URL, form) it walks reference
§10.1 steps 1-7 without side effects; step 8 (a far-from-market 1-lot limit, cancelled at
once) runs only with ``--probe`` on a demo environment.

The §10.1 differential is a pure function, ``diagnose_bridge``, over what the probes saw
(``BridgeProbe``), so that it can be tested without a network.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tradebridge.brokers.http import BrokerHttp, HttpAnswer
from tradebridge.brokers.tvbridge import wire
from tradebridge.config import AccountConfig, Settings
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.contracts import (
    ContractSymbol,
    front_month,
    parse_contract,
    resolve_symbol,
    strip_exchange,
)
from tradebridge.domain.enums import Dialect, Environment, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.errors import BridgeError, InvalidOrder, InvalidSymbol
from tradebridge.store.tokens import StoredToken, TokenStore


class Verdict(StrEnum):
    """The verdicts of reference §10.1 ("What doctor must automate")."""

    OK = "OK"
    MALFORMED_URL = "MALFORMED_URL"
    ACCOUNT_NAME_USED_AS_ID = "ACCOUNT_NAME_USED_AS_ID"
    ACCOUNT_ID_NOT_FOUND = "ACCOUNT_ID_NOT_FOUND"
    TOKEN_INVALID_OR_WRONG_ENV = "TOKEN_INVALID_OR_WRONG_ENV"  # noqa: S105 - a verdict name
    INSTRUMENT_UNKNOWN_OR_EXPIRED = "INSTRUMENT_UNKNOWN_OR_EXPIRED"
    DURATION_NOT_SUPPORTED = "DURATION_NOT_SUPPORTED"
    ENUM_CASE = "ENUM_CASE"
    MISSING_BID_ASK = "MISSING_BID_ASK"
    FORM_INVALID = "FORM_INVALID"  # qty, prices, unknown enum values (not a case problem)


class Status(StrEnum):
    """How one check came out."""

    PASS = "pass"  # noqa: S105 - a check status
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem the bridge differential found."""

    verdict: Verdict
    message: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    verdict: Verdict | None = None


@dataclass(frozen=True, slots=True)
class FailedRequest:
    """A bridge request that failed: method, full URL, form."""

    method: str
    url: str
    form: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, request: str, form: str = "") -> FailedRequest:
        """Parse ``"POST https://host/accounts/D1/orders?locale=en"`` and ``"a=1&b=2"``."""
        method, _, url = request.strip().partition(" ")
        if not url:
            method, url = "POST", method
        return cls(method.upper(), url.strip(), dict(parse_qsl(form, keep_blank_values=True)))

    @property
    def path_account(self) -> str | None:
        """Return the ``{accountId}`` path segment, if the path has one."""
        match = re.search(r"/accounts/([^/?#]*)", self.url)
        return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class BridgeProbe:
    """What the side-effect-free bridge calls answered (reference §10.1 steps 3-6)."""

    accounts_status: int | None  # GET /accounts
    accounts: tuple[tuple[str, str], ...] = ()  # (id, name)
    state_status: int | None = None  # GET /accounts/{id}/state
    orders_status: int | None = None  # GET /accounts/{id}/orders
    instruments: frozenset[str] | None = None
    durations: tuple[str, ...] | None = None
    probed_id: str | None = None  # the id the route probes used


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every check, in order, and the verdict of the bridge differential (if it ran)."""

    account: str | None
    checks: tuple[Check, ...]
    findings: tuple[Finding, ...] = ()

    @property
    def verdict(self) -> Verdict | None:
        """Return the first finding's verdict, ``OK`` when the differential found nothing."""
        if self.findings:
            return self.findings[0].verdict
        return Verdict.OK if any(c.verdict is Verdict.OK for c in self.checks) else None

    @property
    def ok(self) -> bool:
        """Return whether nothing failed."""
        return all(c.status is not Status.FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "account": self.account,
            "ok": self.ok,
            "verdict": self.verdict.value if self.verdict else None,
            "checks": [
                {
                    "name": c.name,
                    "status": c.status.value,
                    "detail": c.detail,
                    "fix": c.fix,
                    "verdict": c.verdict.value if c.verdict else None,
                }
                for c in self.checks
            ],
            "findings": [
                {"verdict": f.verdict.value, "message": f.message, "fix": f.fix}
                for f in self.findings
            ],
        }


# --- the pure differential (reference §10.1 steps 2-7) ----------------------------------

_SEGMENT = re.compile(r"^[A-Za-z0-9]+$")
_ALLOWED_QUERY = {"locale", "requestId"}


def lint_url(url: str, bridge_url: str) -> list[str]:
    """Return what is wrong with a bridge order URL (step 2, H5); empty when nothing is."""
    problems: list[str] = []
    parts = urlsplit(url)
    expected = urlsplit(bridge_url)
    if parts.netloc and expected.netloc and parts.netloc != expected.netloc:
        problems.append(f"host {parts.netloc} is not the configured bridge {expected.netloc}")
    if parts.netloc.startswith("tv-live") and expected.netloc.startswith("tv-demo"):
        problems.append("tv-live host used with a demo configuration")
    if "/v1" in parts.path:
        problems.append("the bridge has no /v1 prefix")
    if url.count("?") > 1:
        problems.append("more than one '?' in the URL")
    if parts.path.endswith("/") and parts.path != "/":
        problems.append("trailing slash")
    segment = FailedRequest("GET", url).path_account
    if segment is not None and not _SEGMENT.match(segment):
        problems.append(f"the account segment {segment!r} is not plain letters and digits")
    keys = {k for k, _ in parse_qsl(parts.query.replace("?", "&"), keep_blank_values=True)}
    extra = sorted(keys - _ALLOWED_QUERY)
    if extra:
        problems.append(f"unexpected query parameters: {', '.join(extra)}")
    if "locale" not in keys:
        problems.append("no locale=en in the query")
    return problems


def normalised_url(url: str, bridge_url: str, account_id: str | None) -> str:
    """Return the URL a bridge order POST should have."""
    segment = account_id or FailedRequest("GET", url).path_account or "{id}"
    return f"{bridge_url.rstrip('/')}/accounts/{segment}/orders?locale=en"


def _lint_account(segment: str | None, probe: BridgeProbe, environment: str) -> list[Finding]:
    if probe.accounts_status == 401:
        return [
            Finding(
                Verdict.TOKEN_INVALID_OR_WRONG_ENV,
                "GET /accounts answered 401: the bridge refuses the token",
                f"store a fresh bridge token for the {environment} environment",
            )
        ]
    if segment is None or probe.accounts_status != 200:
        return []
    ids = {i for i, _ in probe.accounts}
    names = {n: i for i, n in probe.accounts}
    valid = ", ".join(f"{i} ({n})" for i, n in probe.accounts) or "none"
    if segment in ids:
        return []
    if segment in names:
        right = names[segment]
        return [
            Finding(
                Verdict.ACCOUNT_NAME_USED_AS_ID,
                f"the path uses the account name {segment}, not its id",
                f"use id {right} instead of {segment}",
            )
        ]
    why = "a native numeric accountId" if segment.isdigit() else "not an id of this token's user"
    return [
        Finding(
            Verdict.ACCOUNT_ID_NOT_FOUND,
            f"the path segment {segment} is {why} in the {environment} environment",
            f"use one of the valid ids: {valid}",
        )
    ]


def _lint_route(probe: BridgeProbe, environment: str) -> list[Finding]:
    statuses = (probe.state_status, probe.orders_status)
    if 401 in statuses:
        return [
            Finding(
                Verdict.TOKEN_INVALID_OR_WRONG_ENV,
                f"GET /accounts/{probe.probed_id}/state answered 401",
                f"store a fresh bridge token for the {environment} environment",
            )
        ]
    if 404 in statuses:
        return [
            Finding(
                Verdict.ACCOUNT_ID_NOT_FOUND,
                f"GET /accounts/{probe.probed_id}/state or /orders answered 404: this "
                "account id and this token do not belong together",
                "use a token of the user owning the account, in the same environment",
            )
        ]
    return []


def _lint_instrument(instrument: str | None, probe: BridgeProbe, today: date) -> list[Finding]:
    if not instrument:
        return [
            Finding(
                Verdict.FORM_INVALID,
                "the form has no instrument",
                "send instrument=<contract>, e.g. MNQZ6",
            )
        ]
    try:
        contract: ContractSymbol | None = parse_contract(instrument, today)
    except InvalidSymbol:
        contract = None
    suggestion = ""
    if contract is not None:
        suggestion = f"; the current front month is {front_month(contract.root, today).name}"
        if contract.is_expired(today):
            return [
                Finding(
                    Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED,
                    f"{instrument} expired on {contract.expiry().isoformat()}",
                    f"trade the current contract{suggestion}",
                )
            ]
    if probe.instruments is not None and instrument not in probe.instruments:
        return [
            Finding(
                Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED,
                f"{instrument} is not listed in /accounts/{{id}}/instruments",
                f"use a listed instrument name exactly{suggestion}",
            )
        ]
    return []


def _lint_duration(form: Mapping[str, str], probe: BridgeProbe) -> list[Finding]:
    sent = form.get("durationType")
    if sent is None or probe.durations is None or sent in probe.durations:
        return []
    advertised = ", ".join(probe.durations) or "(none)"
    same_but_case = [d for d in probe.durations if d.lower() == sent.lower()]
    hint = f" (the case differs: send {same_but_case[0]})" if same_but_case else ""
    return [
        Finding(
            Verdict.DURATION_NOT_SUPPORTED,
            f"durationType={sent} is not advertised by /config{hint}",
            f"use one of the advertised ids: {advertised}",
        )
    ]


def _lint_form(form: Mapping[str, str]) -> list[Finding]:
    findings: list[Finding] = []
    corrected = dict(form)
    for name, table in (("side", wire.SIDE_FROM_WIRE), ("type", wire.TYPE_FROM_WIRE)):
        value = form.get(name)
        if value is None:
            findings.append(
                Finding(
                    Verdict.FORM_INVALID,
                    f"the form has no {name}",
                    f"send {name}=one of {', '.join(table)}",
                )
            )
        elif value not in table and value.lower() in table:
            corrected[name] = value.lower()
        elif value not in table:
            findings.append(
                Finding(
                    Verdict.FORM_INVALID,
                    f"{name}={value} is not a bridge value",
                    f"use one of {', '.join(table)}",
                )
            )
    if corrected != dict(form):
        changed = ", ".join(
            f"{k}={form[k]} → {corrected[k]}" for k in corrected if corrected[k] != form.get(k)
        )
        findings.insert(
            0,
            Finding(
                Verdict.ENUM_CASE,
                f"capitalised enums ({changed}); the bridge wants lowercase",
                "send the corrected form: " + "&".join(f"{k}={v}" for k, v in corrected.items()),
            ),
        )
    qty = form.get("qty", "")
    if not qty.isdigit() or int(qty) <= 0:
        findings.append(
            Finding(
                Verdict.FORM_INVALID,
                f"qty={qty or '(missing)'} is not a positive whole number",
                "send qty=1 or more",
            )
        )
    order_type = corrected.get("type", "")
    if order_type in ("limit", "stoplimit") and not form.get("limitPrice"):
        findings.append(
            Finding(
                Verdict.FORM_INVALID, f"a {order_type} order needs limitPrice", "send limitPrice"
            )
        )
    if order_type in ("stop", "stoplimit") and not form.get("stopPrice"):
        findings.append(
            Finding(Verdict.FORM_INVALID, f"a {order_type} order needs stopPrice", "send stopPrice")
        )
    missing = [n for n in ("currentBid", "currentAsk") if not form.get(n)]
    if missing:
        findings.append(
            Finding(
                Verdict.MISSING_BID_ASK,
                f"the form lacks {', '.join(missing)}",
                "send currentBid and currentAsk from a recent /quotes",
            )
        )
    return findings


def diagnose_bridge(
    request: FailedRequest,
    probe: BridgeProbe,
    *,
    bridge_url: str,
    today: date,
    environment: str = "demo",
) -> list[Finding]:
    """Walk reference §10.1 steps 2-7 over what the probes saw; every finding, in order."""
    findings: list[Finding] = []
    url_problems = lint_url(request.url, bridge_url)
    segment = request.path_account
    right_id = _right_id(segment, probe)
    if url_problems:
        findings.append(
            Finding(
                Verdict.MALFORMED_URL,
                "; ".join(url_problems),
                f"use {normalised_url(request.url, bridge_url, right_id)}",
            )
        )
    findings += _lint_account(segment, probe, environment)
    findings += _lint_route(probe, environment)
    if request.method.upper() in ("POST", "PUT"):
        findings += _lint_instrument(request.form.get("instrument"), probe, today)
        findings += _lint_duration(request.form, probe)
        findings += _lint_form(request.form)
    return findings


def _right_id(segment: str | None, probe: BridgeProbe) -> str | None:
    for account_id, name in probe.accounts:
        if segment in (account_id, name):
            return account_id
    return None


# --- probes (side-effect free) -----------------------------------------------------------


async def probe_bridge(http: BrokerHttp, token: str, segment: str | None) -> BridgeProbe:
    """Run the GETs of §10.1 steps 3-6 and record their answers."""

    async def get(path: str, **params: str) -> HttpAnswer:
        return await http.request("GET", path, params=wire.query(**params), token=token)

    accounts_answer = await get("/accounts")
    accounts: tuple[tuple[str, str], ...] = ()
    if accounts_answer.status == 200:
        try:
            listed = wire.parse_accounts(wire.unwrap(accounts_answer.body))
            accounts = tuple((a.id, a.name) for a in listed)
        except BridgeError:
            accounts = ()
    probe = BridgeProbe(accounts_answer.status, accounts)
    probed = _right_id(segment, probe) or (accounts[0][0] if accounts and segment is None else None)
    if probed is None and segment and accounts_answer.status == 200:
        probed = segment  # unknown to /accounts: see what its routes answer
    if probed is not None:
        state = await get(f"/accounts/{probed}/state")
        orders = await get(f"/accounts/{probed}/orders")
        probe = replace(
            probe, state_status=state.status, orders_status=orders.status, probed_id=probed
        )
        if state.status == 200:
            instruments = await get(f"/accounts/{probed}/instruments")
            if instruments.status == 200:
                names = {i.name for i in wire.parse_instruments(wire.unwrap(instruments.body))}
                probe = replace(probe, instruments=frozenset(names))
    config = await get("/config")
    if config.status == 200:
        durations = tuple(d.id for d in wire.parse_config(wire.unwrap(config.body)).durations)
        probe = replace(probe, durations=durations)
    return probe


# --- the controlled probe (step 8; demo only, --probe only) ------------------------------


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """What placing one far-from-market limit did."""

    form: Mapping[str, str]
    accepted: bool
    detail: str


def corrected_form(
    form: Mapping[str, str],
    probe: BridgeProbe,
    today: date,
    bid_ask: tuple[Decimal, Decimal] | None,
    far_price: Decimal | None,
) -> dict[str, str]:
    """Return the form with every finding fixed, as a far-from-market 1-lot limit."""
    fixed = {
        k: v
        for k, v in form.items()
        if k in ("instrument", "side", "type", "durationType", "currentBid", "currentAsk")
    }
    fixed["side"] = fixed.get("side", "buy").lower()
    fixed["type"] = "limit"
    fixed["qty"] = "1"
    instrument = fixed.get("instrument", "")
    try:
        contract = parse_contract(instrument, today)
        if contract.is_expired(today) or (
            probe.instruments is not None and instrument not in probe.instruments
        ):
            fixed["instrument"] = front_month(contract.root, today).name
    except InvalidSymbol:
        fixed["instrument"] = front_month("MNQ", today).name
    durations = probe.durations or ("Day",)
    if fixed.get("durationType") not in durations:
        fixed["durationType"] = next((d for d in durations if d.lower() == "day"), durations[0])
    if bid_ask is not None:
        fixed["currentBid"], fixed["currentAsk"] = (wire.wire_decimal(x) for x in bid_ask)
    if far_price is not None:
        fixed["limitPrice"] = wire.wire_decimal(far_price)
    return fixed


def one_change_back(original: Mapping[str, str], fixed: Mapping[str, str]) -> list[tuple[str, str]]:
    """Return the fields to revert one at a time, enum case first (§10.1 step 8)."""
    order = ["side", "type", "durationType", "instrument", "currentBid", "currentAsk"]
    out: list[tuple[str, str]] = []
    for name in order:
        if name in ("side", "type"):
            value = original.get(name)
            if value is not None and value != value.lower() and value.lower() == fixed.get(name):
                out.append((name, value))
            continue
        if name in original and original[name] != fixed.get(name):
            out.append((name, original[name]))
        elif name not in original and name in fixed and name.startswith("current"):
            out.append((name, ""))  # revert = leave it out
    return out


# --- the checks ------------------------------------------------------------------------


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return f"{-seconds // 60} min ago"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


@dataclass
class Doctor:
    """Runs the checks for one account; every collaborator is passed in."""

    settings: Settings
    store: TokenStore
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    symbol: str | None = None
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        """Record one check."""
        self.checks.append(check)
        return check

    async def check_redis(self) -> bool:
        """Check that Redis answers PING."""
        try:
            await self.store.redis.ping()
        except Exception as e:  # noqa: BLE001 - any failure here is the finding itself
            self.add(
                Check(
                    "redis",
                    Status.FAIL,
                    f"Redis does not answer ({type(e).__name__})",
                    "start Redis or set REDIS_URL / --redis-url to a reachable one",
                )
            )
            return False
        self.add(Check("redis", Status.PASS, "Redis answers PING"))
        return True

    async def check_token(self, account: AccountConfig) -> StoredToken | None:
        """Check that the account's token is present, well-formed and not expired."""
        key = self.settings.token_key(account.name)
        try:
            stored = await self.store.read(key)
        except BridgeError as e:
            self.add(
                Check(
                    "token",
                    Status.FAIL,
                    f"{key}: {e}",
                    "store the token as the JSON of reference §2.9 or a bare JWT",
                )
            )
            return None
        if stored is None:
            self.add(
                Check(
                    "token",
                    Status.FAIL,
                    f"no token under {key}",
                    "start the token service, or configure [tokens.bridge]/[tokens.native]",
                )
            )
            return None
        left = stored.remaining(self.now)
        if left <= timedelta(0):
            self.add(
                Check(
                    "token",
                    Status.FAIL,
                    f"{key}: expired {_human(left)}",
                    "renew the token (the token service did not)",
                )
            )
            return None
        kind_note = ""
        if account.dialect is Dialect.TVBRIDGE and stored.kind == "native":
            kind_note = " (kind native: whether the bridge accepts it is unverified, §9.3)"
        if account.dialect is Dialect.NATIVE and stored.kind == "tv":
            self.add(
                Check(
                    "token",
                    Status.WARN,
                    f"{key}: a bridge token (kind tv, from /authorize) for the native account "
                    f"{account.name}, expires in {_human(left)}; whether /v1 accepts it is "
                    "unverified (§9.3)",
                    f"store a native token (auth/accesstokenrequest) under {key}, or set "
                    f'dialect = "tvbridge" for {account.name}',
                )
            )
            return stored
        self.add(
            Check(
                "token",
                Status.PASS,
                f"{key}: {stored.kind} token, expires in {_human(left)}{kind_note}",
            )
        )
        return stored

    async def check_bridge(
        self,
        http: BrokerHttp,
        account: AccountConfig,
        token: StoredToken,
        request: FailedRequest | None,
    ) -> list[Finding]:
        """Check reachability, the account, the contract and the order shape on the bridge."""
        bridge_url = self.settings.tradovate.bridge_url
        env = self.settings.tradovate.environment.value
        segment = request.path_account if request else (account.bridge_id or account.name)
        try:
            probe = await probe_bridge(http, token.access_token, segment)
        except BridgeError as e:
            self.add(
                Check(
                    "broker",
                    Status.FAIL,
                    f"{bridge_url} unreachable: {e}",
                    "check tradovate.bridge_url and the network",
                )
            )
            return []
        if probe.accounts_status == 200:
            self.add(
                Check(
                    "broker",
                    Status.PASS,
                    f"{bridge_url} answers; the token is accepted ({len(probe.accounts)} accounts)",
                )
            )
        else:
            self.add(
                Check(
                    "broker",
                    Status.FAIL,
                    f"GET /accounts answered {probe.accounts_status}",
                    f"store a fresh bridge token for the {env} environment",
                    Verdict.TOKEN_INVALID_OR_WRONG_ENV,
                )
            )
        self._account_check(account, probe)
        form = dict(request.form) if request else self._sample_form(probe)
        if request is None:
            right = _right_id(segment, probe) or segment
            request = FailedRequest("POST", normalised_url("", bridge_url, right), form)
        self._contract_check(form.get("instrument"), probe)
        findings = diagnose_bridge(
            request, probe, bridge_url=bridge_url, today=self.now.date(), environment=env
        )
        if findings:
            for finding in findings:
                self.add(
                    Check("bridge", Status.FAIL, finding.message, finding.fix, finding.verdict)
                )
        else:
            self.add(
                Check(
                    "bridge",
                    Status.PASS,
                    "steps 1-7 of §10.1 found nothing wrong",
                    verdict=Verdict.OK,
                )
            )
        return findings

    def _account_check(self, account: AccountConfig, probe: BridgeProbe) -> None:
        for account_id, name in probe.accounts:
            if account.name in (name, account_id):
                configured = account.bridge_id
                wrong = configured is not None and configured != account_id
                self.add(
                    Check(
                        "account",
                        Status.FAIL if wrong else Status.PASS,
                        f"name {name}, bridge id {account_id}; bridge paths need the id "
                        f"(/accounts/{account_id}/...)",
                        f'set bridge_id = "{account_id}" for {account.name}' if wrong else "",
                        Verdict.ACCOUNT_NAME_USED_AS_ID if wrong and configured == name else None,
                    )
                )
                return
        if probe.accounts_status == 200:
            valid = ", ".join(f"{i} ({n})" for i, n in probe.accounts) or "none"
            self.add(
                Check(
                    "account",
                    Status.FAIL,
                    f"{account.name} is not among this token's accounts: {valid}",
                    "check the account name, the token's user and the environment",
                    Verdict.ACCOUNT_ID_NOT_FOUND,
                )
            )

    def _resolve(self, text: str, fix: str) -> ContractSymbol | None:
        """Return the contract ``text`` names today, or None after adding the failed check."""
        try:
            return resolve_symbol(text, self.now.date())
        except InvalidSymbol as e:
            self.add(
                Check(
                    "contract",
                    Status.FAIL,
                    str(e),
                    fix,
                    Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED,
                )
            )
            return None

    def _contract_check(self, instrument: str | None, probe: BridgeProbe) -> None:
        text = self.symbol or instrument or "MNQ1!"
        contract = self._resolve(text, "use the current front month")
        if contract is None:
            return
        listed = probe.instruments is None or contract.name in probe.instruments
        self.add(
            Check(
                "contract",
                Status.PASS if listed else Status.FAIL,
                f"{text} → {contract.name}, expires {contract.expiry().isoformat()}"
                + ("" if listed else "; not listed for this account"),
                "" if listed else "trade a listed contract",
            )
        )

    async def native_contract_check(self, http: BrokerHttp, token: StoredToken) -> None:
        """Check that the symbol resolves to an unexpired contract ``contract/find`` knows."""
        today = self.now.date()
        text = self.symbol or "MNQ1!"
        contract = self._resolve(text, _front_month_fix(text, today))
        if contract is None:
            return
        answer = await http.request(
            "GET", "/contract/find", params={"name": contract.name}, token=token.access_token
        )
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 200 and body.get("id") and not body.get("errorText"):
            self.add(
                Check(
                    "contract",
                    Status.PASS,
                    f"{text} → {contract.name} (contractId {body['id']}), expires "
                    f"{contract.expiry().isoformat()}",
                )
            )
            return
        self.add(
            Check(
                "contract",
                Status.FAIL,
                f"Tradovate lists no contract {contract.name} (contract/find answered HTTP "
                f"{answer.status})",
                _front_month_fix(text, today),
                Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED,
            )
        )

    def live_check(self) -> None:
        """On live, remind of the 2FA app approval and show the device id's state (§2.7, §2.8)."""
        if self.settings.tradovate.environment is not Environment.LIVE:
            return
        path = self.settings.data_dir / "device_id"
        if self.settings.tradovate.device_id:
            device = "deviceId set in tradovate.device_id"
        elif _persisted_device_id(path):
            device = f"deviceId persisted in {path} (never rotated)"
        else:
            device = (
                f"no deviceId persisted in {path} yet; the first self-managed login creates "
                "it there"
            )
        self.add(
            Check(
                "live",
                Status.WARN,
                "live environment: a 401 on order submit most often means the third-party app "
                "is not yet approved under two-factor authentication, or the deviceId changed; "
                + device,
                "approve the app from Tradovate's 2FA email (look in spam); keep the data "
                f"directory (and {path}) across restarts, never share it between machines",
            )
        )

    def _sample_form(self, probe: BridgeProbe) -> dict[str, str]:
        """Return the form the bridge adapter itself would send for a 1-lot limit."""
        contract = front_month("MNQ", self.now.date())
        sample = SubmitOrder(
            client_order_id=ClientOrderId("tbdoctor"),
            account=AccountName("doctor"),
            contract=contract,
            side=Side.BUY,
            order_type=OrderType.LIMIT,
            quantity=1,
            limit_price=contract.product.tick_size,
        )
        try:
            duration = wire.duration_id(TimeInForce.DAY, probe.durations or ("Day",))
        except InvalidOrder as e:
            self.add(
                Check(
                    "shape",
                    Status.FAIL,
                    str(e),
                    "configure a duration the bridge offers",
                    Verdict.DURATION_NOT_SUPPORTED,
                )
            )
            duration = (probe.durations or ("Day",))[0]
        one = contract.product.tick_size
        return wire.order_form(sample, duration=duration, bid_ask=(one, one))

    async def controlled_probe(
        self,
        http: BrokerHttp,
        token: StoredToken,
        request: FailedRequest | None,
        account_id: str,
    ) -> None:
        """Place a far-from-market 1-lot limit, cancel it; revert one field at a time."""
        if self.settings.tradovate.environment is not Environment.DEMO:
            self.add(
                Check(
                    "probe",
                    Status.SKIP,
                    "the controlled probe runs on demo only",
                    'set tradovate.environment = "demo" to probe',
                )
            )
            return
        probe = await probe_bridge(http, token.access_token, account_id)
        original = dict(request.form) if request else self._sample_form(probe)
        instrument = original.get("instrument") or front_month("MNQ", self.now.date()).name
        quote = await self._quote(http, token, instrument)
        fixed = corrected_form(original, probe, self.now.date(), quote, None)
        quote = await self._quote(http, token, fixed["instrument"]) or quote
        far = _far_price(quote, fixed["side"], fixed["instrument"], self.now.date())
        fixed = corrected_form(original, probe, self.now.date(), quote, far)
        outcome = await self._place_and_cancel(http, token, account_id, fixed)
        if not outcome.accepted:
            self.add(
                Check(
                    "probe",
                    Status.FAIL,
                    f"the corrected form failed too: {outcome.detail}",
                    "capture TradingView's own request and diff it (§10.1 step 9)",
                )
            )
            return
        triggers: list[str] = []
        for name, value in one_change_back(original, fixed):
            trial = dict(fixed)
            if value:
                trial[name] = value
            else:
                trial.pop(name, None)
            result = await self._place_and_cancel(http, token, account_id, trial)
            if not result.accepted:
                triggers.append(f"{name}={value or '(absent)'} → {result.detail}")
        detail = "the corrected form was accepted and cancelled"
        if triggers:
            detail += "; single changes that break it: " + "; ".join(triggers)
        self.add(Check("probe", Status.PASS, detail, verdict=Verdict.OK))

    async def _quote(
        self, http: BrokerHttp, token: StoredToken, instrument: str
    ) -> tuple[Decimal, Decimal] | None:
        answer = await http.request(
            "GET", "/quotes", params=wire.query(symbols=instrument), token=token.access_token
        )
        try:
            quote = wire.parse_quote(wire.unwrap(answer.body), instrument)
        except BridgeError:
            return None
        bid, ask = quote.bid or quote.lp, quote.ask or quote.lp
        return (bid, ask) if bid is not None and ask is not None else None

    async def _place_and_cancel(
        self, http: BrokerHttp, token: StoredToken, account_id: str, form: Mapping[str, str]
    ) -> ProbeOutcome:
        request_id = "tbdoc" + secrets.token_hex(6)
        answer = await http.request(
            "POST",
            f"/accounts/{account_id}/orders",
            params=wire.query(request_id),
            form=form,
            token=token.access_token,
            headers={"Content-Type": wire.FORM_CONTENT_TYPE},
        )
        if answer.status != 200:
            return ProbeOutcome(form, False, f"HTTP {answer.status}")
        try:
            order_id = wire.parse_placed(wire.unwrap(answer.body))
        except BridgeError as e:
            return ProbeOutcome(form, False, str(e))
        cancel = await http.request(
            "DELETE",
            f"/accounts/{account_id}/orders/{order_id}",
            params=wire.query(),
            token=token.access_token,
        )
        return ProbeOutcome(form, True, f"order {order_id} placed; cancel HTTP {cancel.status}")


def _front_month_fix(text: str, today: date) -> str:
    """Return "trade the front month X" for a symbol whose root we can read, else generic."""
    root = None
    try:
        root = parse_contract(text, today).root
    except InvalidSymbol:
        candidate = strip_exchange(text).upper().rstrip("!0123456789")
        try:
            root = front_month(candidate, today).root
        except InvalidSymbol:
            root = None
    if root is None:
        return "use a listed contract, e.g. the front month of its root (MNQ1!)"
    return f"trade the current front month {front_month(root, today).name} (or {root}1!)"


def _persisted_device_id(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8").strip())
    except OSError:
        return False


def _far_price(
    quote: tuple[Decimal, Decimal] | None, side: str, instrument: str, today: date
) -> Decimal:
    try:
        tick = parse_contract(instrument, today).product.tick_size
    except InvalidSymbol:
        tick = Decimal("0.25")
    if quote is None:
        return tick  # a 1-tick buy limit never fills
    bid, ask = quote
    # 20 % away from the market rests for the whole probe without filling.
    raw = bid * Decimal("0.8") if side == "buy" else ask * Decimal("1.2")
    return max((raw / tick).to_integral_value() * tick, tick)


async def check_native(
    doctor: Doctor, http: BrokerHttp, account: AccountConfig, token: StoredToken
) -> None:
    """Check the native side (§10.1 last list): token, account, contract, live 2FA/device."""
    me = await http.request("GET", "/auth/me", token=token.access_token)
    if me.status == 401 or (isinstance(me.body, dict) and me.body.get("errorText")):
        doctor.add(
            Check(
                "broker",
                Status.FAIL,
                "GET /auth/me refused the token",
                "store a fresh native token for this environment",
                Verdict.TOKEN_INVALID_OR_WRONG_ENV,
            )
        )
        return
    if me.status != 200:
        doctor.add(
            Check(
                "broker",
                Status.FAIL,
                f"GET /auth/me answered HTTP {me.status}",
                "check tradovate.native_url and the network",
            )
        )
        return
    doctor.add(Check("broker", Status.PASS, "native API answers; the token is accepted"))
    listed = await http.request("GET", "/account/list", token=token.access_token)
    rows = listed.body if isinstance(listed.body, list) else []
    for row in rows:
        if isinstance(row, dict) and row.get("name") == account.name:
            wrong = account.native_id is not None and account.native_id != row.get("id")
            readonly = bool(row.get("readonly"))
            doctor.add(
                Check(
                    "account",
                    Status.FAIL if wrong or readonly else Status.PASS,
                    f"name {account.name}, native accountId {row.get('id')}; native calls need "
                    "the id in accountId and the name in accountSpec"
                    + ("; READ-ONLY" if readonly else ""),
                    f"set native_id = {row.get('id')}"
                    if wrong
                    else (
                        "this account cannot trade; use a tradable account or ask Tradovate "
                        "to lift the restriction"
                        if readonly
                        else ""
                    ),
                )
            )
            await doctor.native_contract_check(http, token)
            doctor.live_check()
            return
    names = ", ".join(str(r.get("name")) for r in rows if isinstance(r, dict)) or "none"
    doctor.add(
        Check(
            "account",
            Status.FAIL,
            f"{account.name} is not in /account/list ({names})",
            "check the name and the environment",
            Verdict.ACCOUNT_ID_NOT_FOUND,
        )
    )


async def run_doctor(
    settings: Settings,
    store: TokenStore,
    account_name: str,
    *,
    request: FailedRequest | None = None,
    probe: bool = False,
    symbol: str | None = None,
    http_for: Any = None,
    now: datetime | None = None,
) -> DoctorReport:
    """Run every check for one account and return the report; never raises for a finding."""
    from tradebridge.brokers.factory import bridge_http

    doctor = Doctor(settings, store, now=now or datetime.now(UTC), symbol=symbol)
    account = (
        settings.account(account_name)
        if settings.accounts
        else AccountConfig(
            name=account_name, dialect=Dialect.TVBRIDGE if request else Dialect.NATIVE
        )
    )
    if request is not None:
        account = replace_dialect(account, Dialect.TVBRIDGE)
    if not await doctor.check_redis():
        return DoctorReport(account.name, tuple(doctor.checks))
    token = await doctor.check_token(account)
    if token is None:
        return DoctorReport(account.name, tuple(doctor.checks))
    findings: list[Finding] = []
    if account.dialect is Dialect.TVBRIDGE:
        http = http_for(Dialect.TVBRIDGE) if http_for else bridge_http(settings)
        try:
            findings = await doctor.check_bridge(http, account, token, request)
            if probe:
                right = _first_id(doctor.checks) or account.bridge_id or account.name
                await doctor.controlled_probe(http, token, request, right)
        finally:
            await http.aclose()
    else:
        http = (
            http_for(Dialect.NATIVE)
            if http_for
            else BrokerHttp(settings.tradovate.native_url, dialect="native")
        )
        try:
            await check_native(doctor, http, account, token)
        finally:
            await http.aclose()
    return DoctorReport(account.name, tuple(doctor.checks), tuple(findings))


def replace_dialect(account: AccountConfig, dialect: Dialect) -> AccountConfig:
    """Return ``account`` with another dialect (a failed bridge request implies the bridge)."""
    return account.model_copy(update={"dialect": dialect})


def _first_id(checks: list[Check]) -> str | None:
    for check in checks:
        if check.name == "account":
            match = re.search(r"bridge id (\S+);", check.detail)
            if match:
                return match.group(1)
    return None
