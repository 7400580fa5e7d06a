"""``tradebridge doctor``: find out why orders do not reach Tradovate, in plain words.

Checks run in order, each with a verdict and the fix: Redis, the database (when one is
configured: it answers and is no transaction pooler), the token, the broker and the
token together, the account's name and id, the contract, an order shape for the dialect.
For a bridge account (or a failed bridge request: method, URL, form) it walks reference
§10.1 steps 1-7 without side effects; step 8 (a far-from-market 1-lot limit, cancelled at
once) runs only with ``--probe`` on a demo environment.

This module runs them in that order (``run_doctor``); the checks live by concern beside it:
``checkup`` (the record, Redis, the token), ``bridge`` and ``native`` (one per dialect),
``probes`` (what the bridge answers) and ``differential``, the §10.1 differential as a pure
function (``diagnose_bridge``) over what the probes saw (``BridgeProbe``), so that it can be
tested without a network. ``report`` is what they all write. The names are re-exported here,
where callers have always imported them from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from tradebridge.brokers.http import BrokerHttp
from tradebridge.config import AccountConfig, Settings
from tradebridge.doctor.bridge import check_bridge, controlled_probe
from tradebridge.doctor.checkup import Doctor, check_database, check_redis, check_token
from tradebridge.doctor.differential import (
    BridgeProbe,
    FailedRequest,
    diagnose_bridge,
    lint_url,
    normalised_url,
)
from tradebridge.doctor.native import check_native
from tradebridge.doctor.probes import ProbeOutcome, corrected_form, one_change_back, probe_bridge
from tradebridge.doctor.report import Check, DoctorReport, Finding, Status, Verdict
from tradebridge.domain.enums import Dialect
from tradebridge.store.tokens import TokenStore

__all__ = [
    "BridgeProbe",
    "Check",
    "Doctor",
    "DoctorReport",
    "FailedRequest",
    "Finding",
    "ProbeOutcome",
    "Status",
    "Verdict",
    "check_native",
    "corrected_form",
    "diagnose_bridge",
    "lint_url",
    "normalised_url",
    "one_change_back",
    "probe_bridge",
    "replace_dialect",
    "run_doctor",
]


async def run_doctor(
    settings: Settings,
    store: TokenStore,
    account_name: str,
    *,
    request: FailedRequest | None = None,
    probe: bool = False,
    symbol: str | None = None,
    http_for: Callable[[Dialect], BrokerHttp] | None = None,
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
    if not await check_redis(doctor):
        return DoctorReport(account.name, tuple(doctor.checks))
    await check_database(doctor)  # the workers' ledger; the broker checks do not need it
    token = await check_token(doctor, account)
    if token is None:
        return DoctorReport(account.name, tuple(doctor.checks))
    findings: list[Finding] = []
    if account.dialect is Dialect.TVBRIDGE:
        http = http_for(Dialect.TVBRIDGE) if http_for else bridge_http(settings)
        try:
            findings = await check_bridge(doctor, http, account, token, request)
            if probe:
                right = _first_id(doctor.checks) or account.bridge_id or account.name
                await controlled_probe(doctor, http, token, request, right)
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
