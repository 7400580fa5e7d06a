"""The bridge differential of reference §10.1 (steps 2-7) as a pure function.

``diagnose_bridge`` judges a failed bridge request (``FailedRequest``: method, URL, form)
against what the side-effect-free probes saw (``BridgeProbe``), so that it can be tested
without a network; every ``Finding`` carries its verdict and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import parse_qsl, urlsplit

from tradebridge.brokers.tvbridge import wire
from tradebridge.doctor.report import Finding, Verdict
from tradebridge.domain.contracts import ContractSymbol, front_month, parse_contract
from tradebridge.errors import InvalidSymbol


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
    right_id = account_id_of(segment, probe)
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


def account_id_of(segment: str | None, probe: BridgeProbe) -> str | None:
    """Return the id of the account ``segment`` names (by id or by name) among the probed."""
    for account_id, name in probe.accounts:
        if segment in (account_id, name):
            return account_id
    return None
