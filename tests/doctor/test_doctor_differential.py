"""The bridge 404 differential (reference §10.1) as a pure function: no network."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from tradebridge.doctor.diagnosis import (
    BridgeProbe,
    FailedRequest,
    Verdict,
    corrected_form,
    diagnose_bridge,
    lint_url,
    one_change_back,
)

TODAY = date(2026, 11, 25)
BRIDGE = "https://tv-demo.tradovateapi.com"
GOOD_URL = f"{BRIDGE}/accounts/D200010/orders?locale=en"
GOOD_FORM = {
    "instrument": "MNQZ6",
    "qty": "1",
    "side": "buy",
    "type": "limit",
    "limitPrice": "20000",
    "durationType": "Day",
    "currentBid": "21000",
    "currentAsk": "21000.25",
}
HEALTHY = BridgeProbe(
    accounts_status=200,
    accounts=(("D200010", "PAAPEX1361890000010"), ("D200011", "PAAPEX1361890000011")),
    state_status=200,
    orders_status=200,
    instruments=frozenset({"MNQZ6", "MNQH7", "MESZ6"}),
    durations=("Day", "GTC"),
    probed_id="D200010",
)


def _diagnose(
    url: str = GOOD_URL, form: dict[str, str] | None = None, probe: BridgeProbe = HEALTHY
) -> list[Verdict]:
    request = FailedRequest("POST", url, GOOD_FORM if form is None else form)
    return [f.verdict for f in diagnose_bridge(request, probe, bridge_url=BRIDGE, today=TODAY)]


def _with(**changes: str | None) -> dict[str, str]:
    form = dict(GOOD_FORM)
    for key, value in changes.items():
        if value is None:
            form.pop(key)
        else:
            form[key] = value
    return form


def test_diagnose_healthy_request_no_findings() -> None:
    assert _diagnose() == []


@pytest.mark.parametrize(
    ("url", "form", "probe", "verdict"),
    [
        (f"{BRIDGE}/accounts/PAAPEX1361890000010/orders?locale=en", None, HEALTHY,
         Verdict.ACCOUNT_NAME_USED_AS_ID),
        (f"{BRIDGE}/accounts/200010/orders?locale=en", None, HEALTHY,
         Verdict.ACCOUNT_ID_NOT_FOUND),
        (f"{BRIDGE}/accounts/D999999/orders?locale=en", None, HEALTHY,
         Verdict.ACCOUNT_ID_NOT_FOUND),
        (f"{BRIDGE}/v1/accounts/D200010/orders?locale=en", None, HEALTHY, Verdict.MALFORMED_URL),
        (f"{BRIDGE}/accounts/D200010/orders/?locale=en", None, HEALTHY, Verdict.MALFORMED_URL),
        (f"{BRIDGE}/accounts/D200010/orders?locale=en?requestId=1", None, HEALTHY,
         Verdict.MALFORMED_URL),
        (f"{BRIDGE}/accounts/{{account_id}}/orders?locale=en", None, HEALTHY,
         Verdict.MALFORMED_URL),
        ("https://tv-live.tradovateapi.com/accounts/D200010/orders?locale=en", None, HEALTHY,
         Verdict.MALFORMED_URL),
        (GOOD_URL, _with(instrument="MNQZ5"), HEALTHY, Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED),
        (GOOD_URL, _with(instrument="MNQM7"), HEALTHY, Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED),
        (GOOD_URL, _with(durationType="IOC"), HEALTHY, Verdict.DURATION_NOT_SUPPORTED),
        (GOOD_URL, _with(durationType="DAY"), HEALTHY, Verdict.DURATION_NOT_SUPPORTED),
        (GOOD_URL, _with(type="Limit"), HEALTHY, Verdict.ENUM_CASE),
        (GOOD_URL, _with(side="Buy"), HEALTHY, Verdict.ENUM_CASE),
        (GOOD_URL, _with(currentBid=None), HEALTHY, Verdict.MISSING_BID_ASK),
        (GOOD_URL, _with(qty="0"), HEALTHY, Verdict.FORM_INVALID),
        (GOOD_URL, _with(limitPrice=None), HEALTHY, Verdict.FORM_INVALID),
        (GOOD_URL, None, BridgeProbe(accounts_status=401), Verdict.TOKEN_INVALID_OR_WRONG_ENV),
        (GOOD_URL, None, BridgeProbe(200, HEALTHY.accounts, state_status=401, orders_status=401,
                                     probed_id="D200010"), Verdict.TOKEN_INVALID_OR_WRONG_ENV),
        (GOOD_URL, None, BridgeProbe(200, HEALTHY.accounts, state_status=404, orders_status=404,
                                     probed_id="D200010"), Verdict.ACCOUNT_ID_NOT_FOUND),
    ],
)  # fmt: skip
def test_diagnose_one_cause_named_first(
    url: str, form: dict[str, str] | None, probe: BridgeProbe, verdict: Verdict
) -> None:
    assert _diagnose(url, form, probe)[:1] == [verdict]


def test_diagnose_name_as_id_fix_names_right_id() -> None:
    request = FailedRequest("POST", f"{BRIDGE}/accounts/PAAPEX1361890000010/orders?locale=en",
                            GOOD_FORM)  # fmt: skip
    finding = diagnose_bridge(request, HEALTHY, bridge_url=BRIDGE, today=TODAY)[0]
    assert finding.fix == "use id D200010 instead of PAAPEX1361890000010"


def test_diagnose_enum_case_fix_shows_corrected_form() -> None:
    request = FailedRequest("POST", GOOD_URL, _with(type="Limit", side="Buy"))
    finding = diagnose_bridge(request, HEALTHY, bridge_url=BRIDGE, today=TODAY)[0]
    assert "side=buy" in finding.fix
    assert "type=limit" in finding.fix


def test_diagnose_expired_instrument_suggests_front_month() -> None:
    request = FailedRequest("POST", GOOD_URL, _with(instrument="MNQZ5"))
    finding = diagnose_bridge(request, HEALTHY, bridge_url=BRIDGE, today=TODAY)[0]
    assert "MNQZ6" in finding.fix


def test_diagnose_several_causes_all_listed_in_step_order() -> None:
    verdicts = _diagnose(f"{BRIDGE}/accounts/PAAPEX1361890000010/orders?locale=en",
                         _with(type="Limit", instrument="MNQZ5", currentAsk=None))  # fmt: skip
    assert verdicts == [
        Verdict.ACCOUNT_NAME_USED_AS_ID,
        Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED,
        Verdict.ENUM_CASE,
        Verdict.MISSING_BID_ASK,
    ]


def test_diagnose_get_request_skips_form_checks() -> None:
    request = FailedRequest("GET", f"{BRIDGE}/accounts/D200010/state?locale=en")
    assert diagnose_bridge(request, HEALTHY, bridge_url=BRIDGE, today=TODAY) == []


@pytest.mark.parametrize(
    ("text", "form", "method", "segment"),
    [
        ("POST https://h/accounts/D1/orders?locale=en", "type=Limit&qty=1", "POST", "D1"),
        ("https://h/accounts/PA1/orders", "", "POST", "PA1"),
        ("get https://h/accounts/D1/state", "", "GET", "D1"),
    ],
)
def test_failed_request_parse(text: str, form: str, method: str, segment: str) -> None:
    request = FailedRequest.parse(text, form)
    assert (request.method, request.path_account) == (method, segment)
    assert dict(request.form) == dict(p.split("=") for p in form.split("&") if p)


def test_lint_url_good_url_clean() -> None:
    assert lint_url(GOOD_URL, BRIDGE) == []


def test_lint_url_unknown_query_named() -> None:
    assert lint_url(GOOD_URL + "&accountId=1", BRIDGE) == ["unexpected query parameters: accountId"]


def test_corrected_form_fixes_every_finding() -> None:
    original = _with(type="Limit", side="Buy", instrument="MNQZ5", durationType="IOC",
                     currentBid=None, currentAsk=None)  # fmt: skip
    fixed = corrected_form(original, HEALTHY, TODAY, (Decimal(21000), Decimal("21000.25")),
                           Decimal(16800))  # fmt: skip
    assert fixed == {
        "instrument": "MNQZ6", "side": "buy", "type": "limit", "qty": "1",
        "durationType": "Day", "currentBid": "21000", "currentAsk": "21000.25",
        "limitPrice": "16800",
    }  # fmt: skip


def test_one_change_back_enum_case_first() -> None:
    original = _with(type="Limit", instrument="MNQZ5")
    fixed = corrected_form(original, HEALTHY, TODAY, None, Decimal(16800))
    assert one_change_back(original, fixed) == [("type", "Limit"), ("instrument", "MNQZ5")]
