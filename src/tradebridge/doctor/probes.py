"""What the bridge answers: the side-effect-free probes (§10.1 steps 3-6) and the forms of the
controlled probe (step 8: a far-from-market 1-lot limit, each finding reverted in turn).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from tradebridge.brokers.http import BrokerHttp, HttpAnswer
from tradebridge.brokers.tvbridge import wire
from tradebridge.doctor.differential import BridgeProbe, account_id_of
from tradebridge.domain.contracts import front_month, parse_contract
from tradebridge.errors import BridgeError, InvalidSymbol
from tradebridge.store.tokens import StoredToken


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
    probed = account_id_of(segment, probe) or (
        accounts[0][0] if accounts and segment is None else None
    )
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


async def bridge_quote(
    http: BrokerHttp, token: StoredToken, instrument: str
) -> tuple[Decimal, Decimal] | None:
    """Return the bid and ask of ``instrument`` from ``/quotes`` (or the last price)."""
    answer = await http.request(
        "GET", "/quotes", params=wire.query(symbols=instrument), token=token.access_token
    )
    try:
        quote = wire.parse_quote(wire.unwrap(answer.body), instrument)
    except BridgeError:
        return None
    bid, ask = quote.bid or quote.lp, quote.ask or quote.lp
    return (bid, ask) if bid is not None and ask is not None else None


async def place_and_cancel(
    http: BrokerHttp, token: StoredToken, account_id: str, form: Mapping[str, str]
) -> ProbeOutcome:
    """Place ``form`` as an order and cancel it at once (step 8); what the bridge answered."""
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


def far_price(
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
