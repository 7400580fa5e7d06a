"""The audit record of one request to a broker: what was asked, what came back, how fast.

The HTTP client (``brokers.http``) makes one per request, redacted, and hands it to its
listeners; the ledger stores it in ``broker_calls`` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class BrokerCall:
    """One request to the broker and its answer, redacted; the audit record.

    The HTTP client fills every field; the bodies only when a listener keeps them
    (``BrokerHttp.add_listener``), else ``None``. ``broker_calls`` keeps neither ``ts_sent`` (its
    ``created_at`` is when the row was written), ``client_order_id`` nor ``account``: a call
    read back from the ledger has them ``None``.
    """

    dialect: str
    method: str
    path: str
    status: int | None = None
    latency_ms: float | None = None
    request_body: Any = None
    response_body: Any = None
    error: str | None = None
    ts_sent: datetime | None = None
    client_order_id: str | None = None
    account: str | None = None
