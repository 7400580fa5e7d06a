"""Logging benchmark: the CPU one log event and one redaction cost, in microseconds.

    .venv/bin/python bench/log_bench.py [--repeat 2000]

Process CPU time (``time.process_time``) over ``--repeat`` iterations of each case, best of
three, JSON logs written to /dev/null as ``tradebridge serve`` writes them to its stdout:

* ``broker_call`` of a ``placeorder`` (``BrokerHttp._record``: the audit record, redacted,
  and one log event), at INFO and at WARNING, outside and inside ``capture()`` (the
  dispatcher keeps the calls of a placement for ``broker_calls``);
* ``broker_call`` of an ``order/list`` answer of 200 orders (what reconcile reads every
  round), at INFO, outside ``capture()``;
* ``redact()`` of that 200-order answer;
* one ``webhook alert stored`` INFO event (the intake's line per alert).

The machine may be loaded: the figures are CPU time, not wall time, but a busy machine
still slows them (caches); compare runs made side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table
from tradebridge.brokers import pool as pool_module
from tradebridge.brokers.http import BrokerHttp, _Sizes
from tradebridge.brokers.pool import capture
from tradebridge.obs.logging import configure_logging, get_logger, redact

PLACE = {"accountSpec": "BENCH0001", "accountId": 900001, "action": "Buy", "symbol": "MNQZ6",
         "orderQty": 1, "orderType": "Market", "isAutomated": True,
         "clOrdId": "tb-tv-5eb684ce87effcda-1"}  # fmt: skip


def order(n: int) -> dict[str, Any]:
    """Return one order of ``GET /order/list`` as the simulator writes it."""
    return {"id": 1_000_000 + n, "accountId": 900001, "contractId": 4012, "spreadDefinitionId":
            None, "timestamp": "2026-12-05T15:42:06.614Z", "action": "Buy" if n % 2 else "Sell",
            "ordStatus": "Filled", "executionProviderId": None, "ocoId": None, "parentId": None,
            "linkedId": None, "admin": False}  # fmt: skip


ORDERS = [order(n) for n in range(200)]


def cpu_us(work: Callable[[], object], repeat: int) -> float:
    """Return the process CPU microseconds of one ``work()``, best of three runs."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(repeat):
            work()
        best = min(best, time.process_time() - started)
    return best / repeat * 1e6


def pool_listeners(http: BrokerHttp) -> None:
    """Give ``http`` the listeners the broker pool gives every client (no lockout store)."""
    attach = getattr(pool_module, "attach_listeners", None)
    if attach is not None:
        attach(http, None, "bench", 3600.0)
    else:  # before attach_listeners existed (a "before" run): what BrokerPool.get did
        http.add_listener(pool_module._deliver)  # noqa: SLF001


def record(http: BrokerHttp, path: str, request: Any, answer: Any) -> Callable[[], object]:
    """Return a call of ``BrokerHttp._record`` as a request's answer makes it."""

    def once() -> None:
        http._record(None, "POST", path, 200, time.perf_counter(), request, answer,  # type: ignore[arg-type]  # noqa: SLF001
                     "tb-tv-5eb684ce87effcda-1", "BENCH0001", None, _Sizes(200, 19))  # fmt: skip

    return once


def in_capture(work: Callable[[], object]) -> Callable[[], object]:
    """Return ``work`` run inside ``capture()``, as the dispatcher runs a placement."""

    def once() -> None:
        with capture():
            work()

    return once


def main() -> None:
    """Run the cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    sink = Path(os.devnull).open("w", encoding="utf-8")  # noqa: SIM115 - closed at exit
    http = BrokerHttp("http://127.0.0.1:9", dialect="native")
    pool_listeners(http)
    place = record(http, "/order/placeorder", PLACE, {"orderId": 1000013})
    listing = record(http, "/order/list", None, ORDERS)
    intake = get_logger("tradebridge.intake.webhook")

    def stored() -> None:
        intake.info("webhook alert stored", outcome="accepted", group_id="tv-b4ee71c653cb0c4f",
                    signal_ids=["tv-b4ee71c653cb0c4f-1"], format="tradebridge",
                    instrument="MNQZ6")  # fmt: skip

    rows = []
    for level in ("INFO", "WARNING"):
        configure_logging(level, stream=sink)
        rows.append([f"broker_call placeorder, {level}", f"{cpu_us(place, args.repeat):.1f}"])
        rows.append([f"broker_call placeorder, {level}, captured",
                     f"{cpu_us(in_capture(place), args.repeat):.1f}"])  # fmt: skip
    configure_logging("INFO", stream=sink)
    small = max(1, args.repeat // 20)
    rows.append(["broker_call order/list (200 orders), INFO", f"{cpu_us(listing, small):.1f}"])
    rows.append(["redact(order/list answer, 200 orders)",
                 f"{cpu_us(lambda: redact(ORDERS), small):.1f}"])  # fmt: skip
    rows.append(["webhook alert stored, INFO", f"{cpu_us(stored, args.repeat):.1f}"])
    print(f"logging benchmark, process CPU per call, best of 3 x {args.repeat}; on {machine()}\n")
    print_table(["case", "µs"], rows)
    asyncio.run(http.aclose())


if __name__ == "__main__":
    main()
