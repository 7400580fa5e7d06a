"""``[contracts] roll_days`` reaches the webhook: a continuous symbol rolls on its day.

A real uvicorn socket and a real PostgreSQL ledger, on today's date (the webhook's clock).
"""

from __future__ import annotations

from datetime import UTC, datetime

from intake.conftest import SECRET, HookFactory
from tradebridge.domain.contracts import front_month


async def test_webhook_continuous_symbol_rolls_on_the_configured_day(
    make_hook: HookFactory,
) -> None:
    # Crude lists every month, so its front month is at most about a month from expiry,
    # well within the 90 days a setting may say: rolling that many days before the front
    # month's expiry rolls it today, whatever today is (the default rolls 3 days before).
    today = datetime.now(UTC).date()
    current, following = front_month("CL", today), front_month("CL", today, 1)
    days = (current.expiry() - today).days
    hook = await make_hook(sections={"contracts": {"roll_days": {"CL": days}}})

    response = await hook.post({"secret": SECRET, "symbol": "CL1!", "action": "buy", "quantity": 1})

    assert response.status_code == 200, response.text
    (row,) = await hook.rows()
    assert row["instrument"] == following.name  # by default: current.name
