"""The checks of a TradingView bridge account: the bridge and the token together, the account's
id, the contract, the order shape (the §10.1 differential), and with ``--probe`` on demo the
controlled probe (step 8).
"""

from __future__ import annotations

from tradebridge.brokers.http import BrokerHttp
from tradebridge.brokers.tvbridge import wire
from tradebridge.config import AccountConfig
from tradebridge.doctor.checkup import Doctor
from tradebridge.doctor.differential import (
    BridgeProbe,
    FailedRequest,
    account_id_of,
    diagnose_bridge,
    normalised_url,
)
from tradebridge.doctor.probes import (
    bridge_quote,
    corrected_form,
    far_price,
    one_change_back,
    place_and_cancel,
    probe_bridge,
)
from tradebridge.doctor.report import Check, Finding, Status, Verdict
from tradebridge.domain.commands import SubmitOrder
from tradebridge.domain.contracts import front_month
from tradebridge.domain.enums import Environment, OrderType, Side, TimeInForce
from tradebridge.domain.ids import AccountName, ClientOrderId
from tradebridge.errors import BridgeError, InvalidOrder
from tradebridge.store.tokens import StoredToken


async def check_bridge(
    doctor: Doctor,
    http: BrokerHttp,
    account: AccountConfig,
    token: StoredToken,
    request: FailedRequest | None,
) -> list[Finding]:
    """Check reachability, the account, the contract and the order shape on the bridge."""
    bridge_url = doctor.settings.tradovate.bridge_url
    env = doctor.settings.tradovate.environment.value
    segment = request.path_account if request else (account.bridge_id or account.name)
    try:
        probe = await probe_bridge(http, token.access_token, segment)
    except BridgeError as e:
        doctor.add(
            Check(
                "broker",
                Status.FAIL,
                f"{bridge_url} unreachable: {e}",
                "check tradovate.bridge_url and the network",
            )
        )
        return []
    if probe.accounts_status == 200:
        doctor.add(
            Check(
                "broker",
                Status.PASS,
                f"{bridge_url} answers; the token is accepted ({len(probe.accounts)} accounts)",
            )
        )
    elif probe.accounts_status == 404:
        # A host that does not know /accounts is not a TradingView bridge (a wrong
        # bridge_url: another host, a /v1 prefix); nothing else can be checked there.
        finding = Finding(
            Verdict.MALFORMED_URL,
            f"GET {bridge_url}/accounts answered 404: this host does not serve the "
            "TradingView bridge API (the token was not checked)",
            f"check tradovate.bridge_url ({bridge_url}); remove it to use the {env} "
            "environment's bridge host",
        )
        doctor.add(Check("broker", Status.FAIL, finding.message, finding.fix, finding.verdict))
        return [finding]
    else:
        doctor.add(
            Check(
                "broker",
                Status.FAIL,
                f"GET /accounts answered {probe.accounts_status}",
                f"store a fresh bridge token for the {env} environment",
                Verdict.TOKEN_INVALID_OR_WRONG_ENV,
            )
        )
    _account_check(doctor, account, probe)
    form = dict(request.form) if request else _sample_form(doctor, probe)
    if request is None:
        right = account_id_of(segment, probe) or segment
        request = FailedRequest("POST", normalised_url("", bridge_url, right), form)
    _contract_check(doctor, form.get("instrument"), probe)
    findings = diagnose_bridge(
        request, probe, bridge_url=bridge_url, today=doctor.now.date(), environment=env
    )
    if findings:
        for finding in findings:
            doctor.add(Check("bridge", Status.FAIL, finding.message, finding.fix, finding.verdict))
    else:
        doctor.add(
            Check(
                "bridge",
                Status.PASS,
                "steps 1-7 of §10.1 found nothing wrong",
                verdict=Verdict.OK,
            )
        )
    return findings


def _account_check(doctor: Doctor, account: AccountConfig, probe: BridgeProbe) -> None:
    for account_id, name in probe.accounts:
        if account.name in (name, account_id):
            configured = account.bridge_id
            wrong = configured is not None and configured != account_id
            doctor.add(
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
        doctor.add(
            Check(
                "account",
                Status.FAIL,
                f"{account.name} is not among this token's accounts: {valid}",
                "check the account name, the token's user and the environment",
                Verdict.ACCOUNT_ID_NOT_FOUND,
            )
        )


def _contract_check(doctor: Doctor, instrument: str | None, probe: BridgeProbe) -> None:
    text = doctor.symbol or instrument or "MNQ1!"
    contract = doctor.resolve_contract(text, "use the current front month")
    if contract is None:
        return
    listed = probe.instruments is None or contract.name in probe.instruments
    doctor.add(
        Check(
            "contract",
            Status.PASS if listed else Status.FAIL,
            f"{text} → {contract.name}, expires {contract.expiry().isoformat()}"
            + ("" if listed else "; not listed for this account"),
            "" if listed else "trade a listed contract",
        )
    )


def _sample_form(doctor: Doctor, probe: BridgeProbe) -> dict[str, str]:
    """Return the form the bridge adapter itself would send for a 1-lot limit."""
    contract = front_month("MNQ", doctor.now.date())
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
        doctor.add(
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
    doctor: Doctor,
    http: BrokerHttp,
    token: StoredToken,
    request: FailedRequest | None,
    account_id: str,
) -> None:
    """Place a far-from-market 1-lot limit, cancel it; revert one field at a time."""
    if doctor.settings.tradovate.environment is not Environment.DEMO:
        doctor.add(
            Check(
                "probe",
                Status.SKIP,
                "the controlled probe runs on demo only",
                'set tradovate.environment = "demo" to probe',
            )
        )
        return
    probe = await probe_bridge(http, token.access_token, account_id)
    original = dict(request.form) if request else _sample_form(doctor, probe)
    instrument = original.get("instrument") or front_month("MNQ", doctor.now.date()).name
    quote = await bridge_quote(http, token, instrument)
    fixed = corrected_form(original, probe, doctor.now.date(), quote, None)
    quote = await bridge_quote(http, token, fixed["instrument"]) or quote
    far = far_price(quote, fixed["side"], fixed["instrument"], doctor.now.date())
    fixed = corrected_form(original, probe, doctor.now.date(), quote, far)
    outcome = await place_and_cancel(http, token, account_id, fixed)
    if not outcome.accepted:
        doctor.add(
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
        result = await place_and_cancel(http, token, account_id, trial)
        if not result.accepted:
            triggers.append(f"{name}={value or '(absent)'} → {result.detail}")
    detail = "the corrected form was accepted and cancelled"
    if triggers:
        detail += "; single changes that break it: " + "; ".join(triggers)
    doctor.add(Check("probe", Status.PASS, detail, verdict=Verdict.OK))
