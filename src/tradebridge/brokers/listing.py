"""The accounts a Tradovate user can trade, listed with a token before any is configured.

``tradebridge init`` lists them to let the user pick: native ``GET /account/list`` (the
numeric ``accountId`` and the name, reference §4.1) or the bridge's ``GET /accounts`` (the
``D...`` id its paths take and the name, §9.6). The adapters list only configured accounts;
this needs none.
"""

from __future__ import annotations

from tradebridge.brokers.base import AccountInfo
from tradebridge.brokers.http import BrokerHttp, raise_for_status
from tradebridge.brokers.tradovate import wire as native_wire
from tradebridge.brokers.tvbridge import wire as bridge_wire
from tradebridge.domain.enums import Dialect
from tradebridge.domain.ids import AccountName
from tradebridge.store.tokens import StoredToken


async def user_accounts(
    http: BrokerHttp, dialect: Dialect, token: StoredToken, *, user: str
) -> list[AccountInfo]:
    """Return the accounts ``token``'s user can trade, with the ids of ``dialect``."""
    if dialect is Dialect.TVBRIDGE:
        answer = await http.request(
            "GET", "/accounts", params=bridge_wire.query(), token=token.access_token,
            budget_key=user,
        )  # fmt: skip
        raise_for_status(answer, f"GET /accounts for {user}")
        listed = bridge_wire.parse_accounts(bridge_wire.unwrap(answer.body))
        return [AccountInfo(AccountName(a.name), native_id=None, bridge_id=a.id) for a in listed]
    answer = await http.request("GET", "/account/list", token=token.access_token, budget_key=user)
    raise_for_status(answer, f"GET /account/list for {user}")
    accounts = native_wire.parse_list(native_wire.WireAccount, answer.body, "account/list")
    return [
        AccountInfo(
            AccountName(a.name),
            native_id=a.id,
            bridge_id=None,
            active=a.active,
            readonly=a.readonly,
        )
        for a in sorted(accounts, key=lambda a: a.id)
    ]
