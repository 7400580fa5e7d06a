"""Property: whatever arrives, the webhook never answers 5xx and invalid input stores no row."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intake.conftest import SECRET, Hook

_FIELDS = sorted(
    {"symbol", "action", "quantity", "order_type", "price", "stop_price", "tif", "stop_loss",
     "take_profit", "account", "accounts", "strategy", "id", "time", "target_position",
     "market_position", "reference_price", "ticker", "data", "token", "stoploss", "sentiment",
     "orderType", "multiple_accounts", "date", "extra"}
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["buy", "sell", "exit", "flatten", "MNQ1!", "ES1!", "ZZZ", "1.5", "1.0",
                     "-3", "", "limit", "group:team", "ACC1", "2025-01-01T00:00:00Z", "NaN"]),
    st.text(max_size=12),
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from([*_FIELDS, "ticks", "points", "price", "dollars", "multiplier"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=6,
)
_BODIES = st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=8)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_BODIES, raw=st.one_of(st.none(), st.binary(max_size=64)))
async def test_webhook_fuzz_never_5xx_and_invalid_stores_nothing(
    hook: Hook, body: dict[str, Any], raw: bytes | None
) -> None:
    before = await hook.db.fetchval("select count(*) from trading_signals")
    if raw is not None:
        payload: Any = raw
    else:
        payload = json.dumps({"secret": SECRET, **body}, default=str)
    response = await hook.post(payload)
    assert response.status_code < 500, response.text
    after = await hook.db.fetchval("select count(*) from trading_signals")
    if response.status_code != 200:
        assert after == before
    else:
        assert response.json()["status"] in {"accepted", "duplicate", "rejected"}
