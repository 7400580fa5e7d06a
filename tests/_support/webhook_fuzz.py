"""Hostile webhook bodies and the oracle they are judged by (the fuzz suite and bench/).

``TEMPLATES`` are the alerts the documentation tells traders to paste (docs/tradingview.md,
the TradersPost and PickMyTrade shapes of ``intake/formats/``); the mutations change them
field by field with values chosen to break things (huge and tiny numbers, NUL and lone
surrogates, deep nesting, wrong types, overflowing times), or byte by byte after encoding.
``Case.may_store`` is false for bodies that are invalid whatever they say (random bytes, a
wrong secret, nesting past the limit, text the database cannot hold): those must never
become rows. ``check_stored_rows`` is the oracle for everything that did become rows: each
must be a row a worker can handle (validation and routing give an answer or a denial,
never an exception) within the documented bounds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

SECRET = "test-secret-0123456789"
ACCOUNTS = ("ACC1", "ACC2", "ACC3")

# The webhook settings of the intake tests and the long run (rate limit off).
WEBHOOK_SETTINGS: dict[str, Any] = {
    "secret": SECRET,
    "default_account": "ACC1",
    "groups": {"team": ["ACC1", {"account": "ACC2", "multiplier": "2"}]},
    "symbol_map": {"NQ": "MNQ"},
    "rate_limit_per_minute": 0,
}

MAX_DEPTH = 16
MAX_CONTRACTS = 100_000
MAX_MAGNITUDE = Decimal(10) ** 9


def _now(offset_s: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the documented templates ----------------------------------------------------------------

TIME = "<now>"  # replaced by the current time when a body is built


def _templates() -> dict[str, dict[str, Any]]:
    s = SECRET
    return {
        "tb_strategy": {"secret": s, "symbol": "MNQ1!", "action": "buy", "quantity": "1",
                        "id": "Long", "time": TIME, "reference_price": "21000.25",
                        "strategy": "ema-cross", "stop_loss": {"ticks": 40},
                        "take_profit": {"dollars": 100}},
        "tb_target": {"secret": s, "symbol": "MNQ1!", "target_position": "-2",
                      "market_position": "short", "id": "Short", "time": TIME,
                      "accounts": ["group:team"]},
        "tb_indicator_buy": {"secret": s, "symbol": "MNQ1!", "action": "buy", "quantity": 1,
                             "time": TIME, "stop_loss": {"points": 10},
                             "take_profit": {"points": 20}},
        "tb_exit": {"secret": s, "symbol": "MNQ1!", "action": "exit", "time": TIME},
        "tb_limit": {"secret": s, "symbol": "ES1!", "action": "sell", "quantity": 2,
                     "order_type": "limit", "price": "5990.25", "tif": "gtc", "time": TIME,
                     "stop_loss": {"price": "6000"}, "take_profit": {"price": 5980}},
        "tb_stoplimit": {"secret": s, "symbol": "MNQ", "action": "buy", "quantity": 1,
                         "order_type": "stoplimit", "price": 21001, "stop_price": 21000,
                         "time": TIME},
        "tb_fanout": {"secret": s, "symbol": "NQ1!", "action": "reverse", "side": "buy",
                      "quantity": 2,
                      "accounts": ["ACC1", {"account": "ACC3", "multiplier": 3}],
                      "comment": "fan-out", "time": TIME},
        "tb_flatten": {"secret": s, "action": "flatten", "account": "ACC2", "time": TIME},
        "tb_cancel": {"secret": s, "symbol": "GC1!", "action": "cancel", "time": TIME},
        "tp_entry": {"secret": s, "ticker": "MNQ1!", "action": "buy", "quantity": "2",
                     "interval": "5", "signalPrice": "21000",
                     "takeProfit": {"limitPrice": "21010"},
                     "stopLoss": {"type": "stop", "amount": "5"}, "time": TIME},
        "tp_percent": {"secret": s, "ticker": "ES1!", "action": "sell", "sentiment": "bearish",
                       "quantity": 1, "signalPrice": "6000", "orderType": "limit",
                       "limitPrice": "6001", "timeInForce": "day",
                       "takeProfit": {"percent": "0.5"}, "stopLoss": {"percent": "0.25"},
                       "cancel": True, "extras": {"note": "x"}, "time": TIME},
        "tp_exit": {"secret": s, "ticker": "MNQ1!", "action": "exit", "time": TIME},
        "tp_flat": {"secret": s, "ticker": "MNQ1!", "action": "sell", "sentiment": "flat",
                    "time": TIME},
        "pmt_entry": {"symbol": "MNQ1!", "date": TIME, "data": "buy", "quantity": 1,
                      "price": "21000", "order_type": "MKT", "tp": 0, "percentage_tp": 0,
                      "dollar_tp": 20, "sl": 0, "percentage_sl": 0, "dollar_sl": 20,
                      "trail": 0, "update_tp": "false", "update_sl": False, "token": s,
                      "account_id": "ACC2", "reverse_order_close": False, "pyramid": True,
                      "platform": "TRADOVATE"},
        "pmt_limit": {"symbol": "ES1!", "date": TIME, "data": "sell", "quantity": "2",
                      "price": "6000.25", "order_type": "LMT", "tp": "5990", "sl": "6010",
                      "token": s},
        "pmt_reverse": {"symbol": "MNQ1!", "date": TIME, "data": "sell", "quantity": "1",
                        "reverse_order_close": "true", "token": s},
        "pmt_close": {"symbol": "MNQ1!", "date": TIME, "data": "close", "quantity": "1",
                      "token": s},
        "pmt_multi": {"symbol": "MNQ1!", "date": TIME, "data": "buy", "quantity": 1, "token": s,
                      "multiple_accounts": [
                          {"token": s, "account_id": "ACC2", "quantity_multiplier": 2},
                          {"token": s, "account_id": "ACC3", "risk_percentage": 0}]},
    }  # fmt: skip


TEMPLATES: dict[str, dict[str, Any]] = _templates()

# Every field any dialect knows, plus typos and strangers.
FIELD_NAMES: tuple[str, ...] = tuple(
    sorted({k for t in TEMPLATES.values() for k in t}
           | {"order_type", "price", "stop_price", "tif", "account", "accounts", "comment",
              "stoploss", "Symbol", "ACTION", "passphrase", "key", "extra", "", " ",
              "risk_percentage", "trailAmount", "quantityType", "multiple_accounts",
              "breakeven", "connection_name", "limitPrice", "stopPrice", "x" * 300})
)  # fmt: skip
SECRET_KEYS = frozenset({"secret", "token", "passphrase", "key"})


def fill(body: Any) -> Any:
    """Return a copy of ``body`` with ``TIME`` replaced by now."""
    if isinstance(body, dict):
        return {k: fill(v) for k, v in body.items()}
    if isinstance(body, list):
        return [fill(v) for v in body]
    return _now() if body == TIME else body


# --- hostile values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deep:
    """``leaf`` nested ``depth`` levels deep; written as text by ``encode`` (json.dumps
    itself recurses and stops near 1,000 levels)."""

    depth: int
    leaf: Any = 1
    objects: bool = False

    def text(self) -> str:
        opener, closer = ('{"a":', "}") if self.objects else ("[", "]")
        return opener * self.depth + json.dumps(self.leaf, default=str) + closer * self.depth


def deep(depth: int, leaf: Any = 1, *, objects: bool = False) -> Deep:
    """Return ``leaf`` nested ``depth`` levels deep."""
    return Deep(depth, leaf, objects)


# Values that are text the database cannot hold: any body carrying one must not store.
UNSTORABLE: tuple[str, ...] = ("\x00", "a\x00b", "\ud800", "\udfff", "x\udc80y", "\ud83d")
INTERESTING: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2, 3, 100_000, 100_001, 10**9, 10**30, -(10**30), 10**400,
    1.5, 0.1, 1e30, -1e300, 1e-40, 5e-324, "1", "1.0", "2.00", "-3", "0", "", " ", "NaN",
    "Infinity", "-Infinity", "1e30", "1E+29", "1e-40", "0x10", "1_000", "\u00b2", "\u0663",
    "1" * 5000, "9" * 30, "0.000000000000000000000000000000001", "999999999.75",
    "21000.123456789012345678901234567890", "buy", "sell", "exit", "BUY", "close", "reverse",
    "cancel", "flatten", "add", "limit", "stoplimit", "stop_limit", "trailing_stop", "LMT",
    "MKT", "gtc", "opg", "long", "short", "flat", "bullish", "MNQ1!", "ES1!", "NQ1!", "MNQZ6",
    "MNQ", "CME_MINI:MNQ1!", "ZZZ1!", "MNQZ2001", "group:team", "group:none", "ACC1", "ACC9",
    "A" * 600, "{{close}}", "{{timenow}}", "\ud83d\ude00", "\U0001f680", "\u202e", "\r\n",
    "'; drop table",
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2025-02-30T00:00:00Z",
    "1700000000", "1700000000000", "99999999999999999999", [], [1], ["ACC1"], ["ACC1", "ACC1"],
    [{"account": "ACC2", "multiplier": "1e20"}], [{"account": "group:team", "multiplier": 1000}],
    {}, {"ticks": 4}, {"ticks": 1.5}, {"points": "1e25"}, {"price": "1e29"}, {"dollars": -1},
    {"dollars": "1e-31"}, {"ticks": 4, "points": 1}, {"limitPrice": "1e28"},
    {"type": "trailing_stop", "trailAmount": 1}, {"percent": "1e20"}, {"amount": 10**30},
    *UNSTORABLE,
)  # fmt: skip
CONTENT_TYPES: tuple[bytes | None, ...] = (
    b"application/json", b"text/plain", b"text/plain; charset=utf-8",
    b"application/json; charset=latin-1", b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=x", b"application/octet-stream", b"image/png", b"",
    b"\xe9/\xe9", b"*/*", None,
)  # fmt: skip
PATHS: tuple[str, ...] = (
    "/webhook", "/webhook", "/webhook", f"/webhook/{SECRET}", "/webhook/wrong-secret-000000",
    "/webhook/%00", "/webhook/%ED%A0%80", "/webhook/" + "a" * 3000, f"/webhook/{SECRET}%00",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One request: path, content type, body bytes, and whether it may become rows."""

    kind: str
    path: str
    content_type: bytes | None
    body: bytes
    may_store: bool


def encode(body: Any) -> bytes:
    """Encode a body as a sender would (ASCII escapes for anything unusual)."""
    nested: list[Deep] = []

    def swap(node: Any) -> Any:
        if isinstance(node, Deep):
            nested.append(node)
            return f"\x01deep{len(nested) - 1}\x01"
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    text = json.dumps(swap(body), default=str)
    for index, value in enumerate(nested):
        text = text.replace(f'"\\u0001deep{index}\\u0001"', value.text(), 1)
    return text.encode()


def _unstorable(value: Any) -> bool:
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, Deep):
            pending.append(node.leaf)
        elif isinstance(node, dict):
            pending.extend(node)
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, str):
            # As the server reads it: JSON joins an escaped high and low surrogate into one
            # character, so only a surrogate left on its own is unstorable.
            text = json.loads(json.dumps(node))
            if any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in text):
                return True
    return False


def _depth(value: Any) -> int:
    deepest, pending = 0, [(value, 0)]
    while pending:
        node, level = pending.pop()
        if isinstance(node, Deep):
            deepest = max(deepest, level + node.depth + _depth(node.leaf))
        elif isinstance(node, dict | list):
            level += 1
            deepest = max(deepest, level)
            pending.extend((child, level) for child in (node.values() if isinstance(node, dict)
                                                        else node))  # fmt: skip
    return deepest


def judge(kind: str, path: str, content_type: bytes | None, body: Any) -> Case:
    """Build the case of a structured body: it may store only if nothing rules it out."""
    secret_ok = path in {"/webhook", f"/webhook/{SECRET}"}
    may = secret_ok and not _unstorable(body) and _depth(body) <= MAX_DEPTH
    if isinstance(body, dict):
        given = [body[k] for k in body if k.lower() in SECRET_KEYS and body[k] is not None]
        may = may and all(v == SECRET for v in given) and (bool(given) or path != "/webhook")
    return Case(kind, path, content_type, encode(body), may)


# --- mutations (random.Random: the bench; the hypothesis suite draws the same choices) ---------


def random_value(rng: random.Random) -> Any:
    """Return a hostile value: from the pool, or made up."""
    roll = rng.random()
    if roll < 0.55:
        return rng.choice(INTERESTING)
    if roll < 0.65:
        return rng.randint(-(10 ** rng.randint(1, 40)), 10 ** rng.randint(1, 40))
    if roll < 0.75:
        exponent = rng.randint(-60, 60)
        return f"{rng.choice('-+ ')}{rng.randint(0, 10**6)}.{rng.randint(0, 999)}e{exponent}"
    if roll < 0.85:
        size = rng.randint(0, 40)
        return "".join(chr(rng.choice((rng.randint(0, 0x7F), rng.randint(0, 0x10FFFF))))
                       for _ in range(size))  # fmt: skip
    if roll < 0.92:
        return deep(rng.choice((2, 8, 16, 17, 40, 600, 900, 3000)), rng.choice(INTERESTING),
                    objects=rng.random() < 0.5)  # fmt: skip
    return [random_value(rng) for _ in range(rng.randint(0, 3))]


def mutate(rng: random.Random, body: dict[str, Any]) -> dict[str, Any]:
    """Apply one to four field-level mutations to a copy of ``body``."""
    out = dict(body)
    for _ in range(rng.randint(1, 4)):
        keys = [k for k in out if k not in SECRET_KEYS] or list(out) or ["x"]
        op = rng.random()
        if op < 0.45:  # change a value the alert has
            out[rng.choice(keys)] = random_value(rng)
        elif op < 0.6:  # add a field (known, typo or stranger)
            out[rng.choice(FIELD_NAMES)] = random_value(rng)
        elif op < 0.72:  # drop a field
            out.pop(rng.choice(keys), None)
        elif op < 0.8:  # inside a nested object or list
            nested = [k for k in out if isinstance(out[k], dict | list) and out[k]]
            if nested:
                key = rng.choice(nested)
                inner = out[key]
                if isinstance(inner, dict):
                    inner = dict(inner)
                    inner[rng.choice([*inner, rng.choice(FIELD_NAMES)])] = random_value(rng)
                else:
                    inner = list(inner)
                    inner[rng.randrange(len(inner))] = random_value(rng)
                out[key] = inner
        elif op < 0.88:  # a secret field
            out[rng.choice(sorted(SECRET_KEYS))] = rng.choice(
                (SECRET, SECRET, SECRET.upper(), "", None, 12345, "\ud800", SECRET + "\x00")
            )
        elif op < 0.94:  # a key the database cannot hold
            out[rng.choice(UNSTORABLE) + rng.choice(keys)] = 1
        else:  # take a field from another dialect's template
            other = rng.choice(list(TEMPLATES.values()))
            key = rng.choice(list(other))
            out[key] = fill(other[key])
    return out


def mangle(rng: random.Random, raw: bytes) -> bytes:
    """Damage encoded bytes: truncate, flip, insert, re-encode, wrap."""
    op = rng.randrange(8)
    if op == 0 and raw:
        return raw[: rng.randrange(len(raw))]
    if op == 1 and raw:
        at = rng.randrange(len(raw))
        return raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1 :]
    if op == 2:
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + rng.randbytes(rng.randint(1, 8)) + raw[at:]
    if op == 3:
        return b"\xef\xbb\xbf" + raw  # a UTF-8 byte order mark (read as text)
    if op == 4:
        return raw.decode().encode(rng.choice(("utf-16", "utf-32", "latin-1")), "replace")
    if op == 5:
        return b"[" + raw + b"]" if rng.random() < 0.5 else b"[" + raw + b"," + raw + b"]"
    if op == 6:
        return raw + rng.choice((b"}", b"\x00", b" trailing", b"\n" * 3))
    return raw.replace(b'"', b"'")


def random_case(rng: random.Random) -> Case:
    """Return one request of a random kind (the long run's mix)."""
    path = rng.choice(PATHS)
    ctype = rng.choice(CONTENT_TYPES)
    roll = rng.random()
    name = rng.choice(list(TEMPLATES))
    body = fill(TEMPLATES[name])
    if roll < 0.05:
        return judge(f"template:{name}", "/webhook", ctype, body)
    if roll < 0.70:
        return judge(f"mutated:{name}", path, ctype, mutate(rng, body))
    if roll < 0.82:
        raw = mangle(rng, encode(mutate(rng, body) if rng.random() < 0.5 else body))
        # Damaged bytes may still be a valid alert (a flip inside a string): judged by rows.
        return Case(f"bytes:{name}", path, ctype, raw, may_store=True)
    if roll < 0.90:
        return Case("random-bytes", path, ctype, rng.randbytes(rng.randint(0, 2048)), False)
    if roll < 0.96:
        depth = rng.choice((17, 100, 500, 900, 2000, 20_000))
        body[rng.choice(FIELD_NAMES)] = deep(depth, objects=rng.random() < 0.5)
        return Case("deep", path, ctype, encode(body), may_store=False)
    body["quantity" if rng.random() < 0.5 else rng.choice(list(body))] = rng.choice(
        (10**30, 1e30, "1e29", -(10**25), "9" * 40, 10**400)
    )
    return judge("huge-number", path, ctype, body)


def wire(case: Case) -> bytes:
    """Return the HTTP/1.1 request of ``case`` as bytes (headers built by hand: any bytes)."""
    head = [b"POST " + case.path.encode() + b" HTTP/1.1", b"Host: tradebridge"]
    if case.content_type is not None:
        head.append(b"Content-Type: " + case.content_type)
    head.append(b"Content-Length: " + str(len(case.body)).encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + case.body


def request_kwargs(case: Case) -> dict[str, Any]:
    """Return httpx arguments for ``case``."""
    headers = {} if case.content_type is None else {"content-type": case.content_type}
    return {"content": case.body, "headers": headers}


# --- the oracle --------------------------------------------------------------------------------


def check_stored_rows(rows: Iterable[Mapping[str, Any]], today: date) -> list[str]:
    """Return what is wrong with rows the webhook stored (empty: each is a workable row)."""
    from tradebridge.domain.ids import ClientOrderId
    from tradebridge.domain.reports import PositionReport
    from tradebridge.pipeline.route import BrokerView, route
    from tradebridge.pipeline.validate import RawSignal, ValidSignal, validate
    from tradebridge.store.ledger import LedgerRow

    problems: list[str] = []
    for record in rows:
        sid = record["signal_id"]

        def bad(what: str, sid: str = sid) -> None:
            problems.append(f"{sid}: {what}")

        if record["account_name"] not in ACCOUNTS:
            bad(f"account {record['account_name']!r}")
        if record["intent"] not in {"order", "exit", "reverse", "cancel", "flatten", "target"}:
            bad(f"intent {record['intent']!r}")
        if record["side"] not in {"buy", "sell", None}:
            bad(f"side {record['side']!r}")
        for column in ("quantity", "target_position"):
            value = record[column]
            if value is not None and (value != int(value) or abs(value) > MAX_CONTRACTS):
                bad(f"{column} {value}")
        if record["quantity"] is not None and record["quantity"] < 1:
            bad(f"quantity {record['quantity']}")
        for column in ("price", "stop_price", "stop_loss", "take_profit", "reference_price"):
            value = record[column]
            if value is not None and not Decimal(0) < value < MAX_MAGNITUDE:
                bad(f"{column} {value}")
        for column in ("stop_loss_ticks", "take_profit_ticks"):
            value = record[column]
            if value is not None and not 1 <= value <= 1_000_000:
                bad(f"{column} {value}")
        try:
            signal = validate(RawSignal.of(LedgerRow.from_record(record)), today=today,
                              accounts=ACCOUNTS, root_map={"NQ": "MNQ"})  # fmt: skip
            if isinstance(signal, ValidSignal):
                held = ()
                if signal.contract is not None:
                    held = (PositionReport(signal.account, signal.contract.name, 3, Decimal(1)),)
                for view in (BrokerView(quote=Decimal("21000.25")), BrokerView(positions=held)):
                    route(signal, view, ClientOrderId(f"tb-{sid}"), today=today)
        except Exception as e:  # noqa: BLE001 - any exception is the finding
            bad(f"a worker would fail on it: {type(e).__name__}: {e}")
    return problems
