"""Property: whatever arrives, the webhook never answers 5xx and invalid input stores no row.

Against the real webhook (``serve``'s uvicorn settings and guard) over a real PostgreSQL:
structured mutations of every documented template, damaged bytes, random bytes, deep
nesting, huge numbers, every content type and secret placement. The bodies and the oracle
are shared with the long run, ``bench/fuzz_webhook.py`` (``_support/webhook_fuzz.py``).
Every row that does get stored must be one a worker can handle within the documented bounds.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from _support import webhook_fuzz as fz
from intake.conftest import Hook


def fuzz(examples: int) -> settings:
    """Hypothesis settings of one fuzz test: its number of examples, no deadline."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


_TEMPLATE_NAMES = st.sampled_from(sorted(fz.TEMPLATES))
_CONTENT_TYPES = st.sampled_from(fz.CONTENT_TYPES)


async def send(hook: Hook, case: fz.Case) -> httpx.Response:
    """POST ``case`` and judge the answer and the rows it left; return the answer."""
    before = await hook.db.fetchval("select coalesce(max(seq), 0) from trading_signals")
    response = await hook.client.post(hook.url + case.path, **fz.request_kwargs(case))
    assert response.status_code < 500, (case, response.text)
    rows = await hook.db.fetch("select * from trading_signals where seq > $1", before)
    stored = sorted(r["signal_id"] for r in rows)
    if response.status_code != 200:
        assert stored == [], (case, response.text)
        return response
    answer = response.json()
    assert answer["status"] in {"accepted", "duplicate", "rejected"}, answer
    if answer["status"] == "duplicate":
        assert stored == [], (case, answer)
    else:
        assert case.may_store, f"stored from invalid input: {case} -> {answer}"
        assert stored == sorted(answer["signal_ids"]), (case, answer)
    problems = fz.check_stored_rows(rows, datetime.now(UTC).date())
    assert problems == [], (case, problems)
    return response


@fuzz(250)
@given(name=_TEMPLATE_NAMES, rng=st.randoms(use_true_random=False), ctype=_CONTENT_TYPES,
       path=st.sampled_from(fz.PATHS))  # fmt: skip
async def test_fuzz_mutated_templates_never_5xx_and_store_only_workable_rows(
    hook: Hook, name: str, rng: random.Random, ctype: bytes | None, path: str
) -> None:
    body = fz.mutate(rng, fz.fill(fz.TEMPLATES[name]))
    await send(hook, fz.judge(f"mutated:{name}", path, ctype, body))


@fuzz(len(fz.TEMPLATES) * 2)
@given(name=_TEMPLATE_NAMES, ctype=_CONTENT_TYPES)
async def test_fuzz_every_documented_template_is_accepted_whatever_the_content_type(
    hook: Hook, name: str, ctype: bytes | None
) -> None:
    case = fz.judge(f"template:{name}", "/webhook", ctype, fz.fill(fz.TEMPLATES[name]))
    response = await send(hook, case)
    assert response.json()["status"] in {"accepted", "duplicate"}, response.text


@fuzz(100)
@given(name=_TEMPLATE_NAMES, rng=st.randoms(use_true_random=False), ctype=_CONTENT_TYPES)
async def test_fuzz_damaged_bytes_never_5xx(
    hook: Hook, name: str, rng: random.Random, ctype: bytes | None
) -> None:
    raw = fz.mangle(rng, fz.encode(fz.fill(fz.TEMPLATES[name])))
    await send(hook, fz.Case(f"bytes:{name}", "/webhook", ctype, raw, may_store=True))


@fuzz(100)
@given(raw=st.binary(max_size=2048), ctype=_CONTENT_TYPES, path=st.sampled_from(fz.PATHS))
@example(raw=b"\x00" * 64, ctype=b"text/plain", path="/webhook")
@example(raw=b"\xff\xfe{\x00}\x00", ctype=None, path="/webhook")
async def test_fuzz_random_bytes_never_5xx_and_store_nothing(
    hook: Hook, raw: bytes, ctype: bytes | None, path: str
) -> None:
    await send(hook, fz.Case("random-bytes", path, ctype, raw, may_store=False))


@fuzz(40)
@given(name=_TEMPLATE_NAMES, depth=st.integers(fz.MAX_DEPTH + 1, 50_000),
       field=st.sampled_from(fz.FIELD_NAMES), objects=st.booleans())  # fmt: skip
@example(name="tb_strategy", depth=500, field="comment", objects=False)
@example(name="tb_strategy", depth=900, field="stop_loss", objects=True)
async def test_fuzz_deep_nesting_is_400_and_stores_nothing(
    hook: Hook, name: str, depth: int, field: str, objects: bool
) -> None:
    body = fz.fill(fz.TEMPLATES[name])
    body[field] = fz.deep(depth - 1, objects=objects)  # the body itself is one level
    response = await send(hook, fz.Case("deep", "/webhook", None, fz.encode(body), False))
    assert response.status_code in {400, 413}, response.text  # 413: past max_body_bytes


_HUGE = st.one_of(
    st.integers(min_value=10**9).map(lambda n: n * (-1) ** n),
    st.integers(min_value=10, max_value=4000).map(lambda e: f"1e{e}"),
    st.integers(min_value=31, max_value=4000).map(lambda e: f"1e-{e}"),
    st.floats(min_value=1e9, allow_infinity=False),
    st.sampled_from(["9" * 40, "1" * 4000, "99999999999999999999.5", "-1e29"]),
)


@fuzz(150)
@given(name=_TEMPLATE_NAMES, data=st.data(), value=_HUGE)
@example(name="pmt_close", data=None, value=1e30)  # the measured AssertionError
async def test_fuzz_huge_numbers_in_any_field_never_5xx(
    hook: Hook, name: str, data: Any, value: Any
) -> None:
    body = fz.fill(fz.TEMPLATES[name])
    numeric = ["quantity", "price", "stop_price", "reference_price", "target_position",
               "signalPrice", "limitPrice", "stopPrice", "tp", "sl", "dollar_tp", "dollar_sl",
               "stop_loss", "take_profit", "takeProfit", "stopLoss", "time", "date"]  # fmt: skip
    field = "dollar_sl" if data is None else data.draw(st.sampled_from(numeric))
    if field in {"stop_loss", "take_profit"}:
        body[field] = {"points": value}
    elif field in {"takeProfit", "stopLoss"}:
        body[field] = {"amount": value}
    else:
        body[field] = value
    await send(hook, fz.judge("huge-number", "/webhook", None, body))


_JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
              st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(fz.INTERESTING)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(fz.FIELD_NAMES), inner, max_size=3)),
    max_leaves=8,
)  # fmt: skip


@fuzz(150)
@given(body=st.dictionaries(st.sampled_from(fz.FIELD_NAMES), _JSON_VALUES, max_size=8),
       secret=st.sampled_from(["secret", "token", "passphrase", None]))  # fmt: skip
async def test_fuzz_arbitrary_objects_never_5xx(
    hook: Hook, body: dict[str, Any], secret: str | None
) -> None:
    if secret is not None:
        body[secret] = fz.SECRET
    await send(hook, fz.judge("object", "/webhook", None, body))


async def test_fuzz_surrogate_secret_without_knowing_the_secret_is_4xx(hook: Hook) -> None:
    for text in (r'{"secret": "\ud800"}', r'{"token": "\udfff", "data": "buy"}'):
        response = await send(hook, fz.Case("surrogate", "/webhook", None, text.encode(), False))
        assert response.status_code in {400, 401}
        assert "test-secret" not in json.dumps(response.json())
