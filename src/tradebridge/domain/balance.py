"""An account's balance marks: what the ledger keeps of its balance for the P&L rules.

Kept per account in ``account_risk`` (``store/ledger/risk.py``); judged by the rules
(``pipeline/risk.py``) and shown as the account's standing (``pipeline/standing.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class BalanceMarks:
    """An account's marks: its trading day, the balance at that day's start, the highest
    balances seen (any time: intraday; at the start of a day: end of day), the last balance
    read and when."""

    trading_day: date
    day_start_balance: Decimal
    high_water_intraday: Decimal
    high_water_eod: Decimal
    balance: Decimal
    updated_at: datetime | None = None
