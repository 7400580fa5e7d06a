"""The checks of a native account (§10.1, last list): the token on ``/auth/me``, the account's
name and id on ``/account/list``, the contract on ``contract/find``, and on live the 2FA app
approval and the device id (§2.7, §2.8).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from tradebridge.brokers.http import BrokerHttp
from tradebridge.config import AccountConfig
from tradebridge.doctor.checkup import Doctor
from tradebridge.doctor.report import Check, Status, Verdict
from tradebridge.domain.contracts import (
    RollCalendar,
    front_month,
    parse_contract,
    strip_exchange,
)
from tradebridge.domain.enums import Environment
from tradebridge.errors import InvalidSymbol
from tradebridge.store.tokens import StoredToken


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
            await native_contract_check(doctor, http, token)
            live_check(doctor)
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


async def native_contract_check(doctor: Doctor, http: BrokerHttp, token: StoredToken) -> None:
    """Check that the symbol resolves to an unexpired contract ``contract/find`` knows."""
    today = doctor.now.date()
    text = doctor.symbol or "MNQ1!"
    calendar = doctor.settings.contracts.calendar()
    contract = doctor.resolve_contract(text, _front_month_fix(text, today, calendar))
    if contract is None:
        return
    answer = await http.request(
        "GET", "/contract/find", params={"name": contract.name}, token=token.access_token
    )
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status == 200 and body.get("id") and not body.get("errorText"):
        doctor.add(
            Check(
                "contract",
                Status.PASS,
                f"{text} → {contract.name} (contractId {body['id']}), expires "
                f"{contract.expiry().isoformat()}",
            )
        )
        return
    doctor.add(
        Check(
            "contract",
            Status.FAIL,
            f"Tradovate lists no contract {contract.name} (contract/find answered HTTP "
            f"{answer.status})",
            _front_month_fix(text, today, calendar),
            Verdict.INSTRUMENT_UNKNOWN_OR_EXPIRED,
        )
    )


def live_check(doctor: Doctor) -> None:
    """On live, remind of the 2FA app approval and show the device id's state (§2.7, §2.8)."""
    if doctor.settings.tradovate.environment is not Environment.LIVE:
        return
    path = doctor.settings.data_dir / "device_id"
    if doctor.settings.tradovate.device_id:
        device = "deviceId set in tradovate.device_id"
    elif _persisted_device_id(path):
        device = f"deviceId persisted in {path} (never rotated)"
    else:
        device = (
            f"no deviceId persisted in {path} yet; the first self-managed login creates it there"
        )
    doctor.add(
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


def _front_month_fix(text: str, today: date, calendar: RollCalendar) -> str:
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
    current = front_month(root, today, calendar=calendar)
    return f"trade the current front month {current.name} (or {root}1!)"


def _persisted_device_id(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8").strip())
    except OSError:
        return False
