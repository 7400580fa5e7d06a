"""Helpers for the TradingView bridge tests: a simulator per test and a small bridge client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tradebridge.domain.contracts import front_month
from tradebridge.sim.clock import ManualClock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.server import SimServer

DEMO_ACCOUNT = "D100001"
DEMO_OTHER_ACCOUNT = "D100002"
APEX_ACCOUNT = "D200010"


@dataclass
class Bridge:
    """A running simulator, its clock, and an httpx client logged in on the bridge."""

    server: SimServer
    clock: ManualClock
    http: httpx.Client
    token: str

    @property
    def front(self) -> str:
        """Return the MNQ front month at the simulator's clock (MNQZ6 by default)."""
        return front_month("MNQ", self.clock.now().date()).name

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params or None, headers=self.headers())

    def place(
        self, account: str = DEMO_ACCOUNT, params: dict[str, str] | None = None, **form: Any
    ) -> httpx.Response:
        body = {"instrument": self.front, "qty": "1", "side": "buy", "type": "market"}
        body.update({k: str(v) for k, v in form.items()})
        return self.http.post(
            f"/accounts/{account}/orders",
            params={"locale": "en", **(params or {})},
            data=body,
            headers=self.headers(),
        )

    def place_ok(self, account: str = DEMO_ACCOUNT, **form: Any) -> str:
        answer = self.place(account, **form)
        assert answer.status_code == 200, answer.text
        payload = answer.json()
        assert payload["s"] == "ok", payload
        order_id: str = payload["d"]["orderId"]
        return order_id

    def order(self, order_id: str, account: str = DEMO_ACCOUNT) -> dict[str, Any]:
        payload = self.get(f"/accounts/{account}/orders/{order_id}").json()
        assert payload["s"] == "ok", payload
        order: dict[str, Any] = payload["d"]
        return order

    def d(self, path: str, **params: Any) -> Any:
        answer = self.get(path, **params)
        assert answer.status_code == 200, answer.text
        payload = answer.json()
        assert payload["s"] == "ok", payload
        return payload["d"]

    def set_price(self, symbol: str, price: str) -> None:
        answer = self.http.post("/_sim/price", json={"symbol": symbol, "price": price})
        assert answer.status_code == 200, answer.text

    def quote_last(self, symbol: str) -> float:
        quotes = self.d("/quotes", symbols=symbol)
        last: float = quotes[0]["v"]["lp"]
        return last


def login(http: httpx.Client, user: str = "demo", password: str = "demo") -> str:
    """Log in on the bridge and return the access token."""
    payload = http.post("/authorize", params={"locale": "en"}, data={
        "locale": "en", "login": user, "password": password,
    }).json()  # fmt: skip
    assert payload["s"] == "ok", payload
    token: str = payload["d"]["access_token"]
    return token


@contextmanager
def running_bridge(**settings: Any) -> Iterator[Bridge]:
    """Start a simulator on a free port with a manual clock, and log in as ``demo``."""
    clock = ManualClock()
    config = SimConfig(port=0, price_step_s=3600, **settings)
    with SimServer(config, clock) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        yield Bridge(server, clock, http, login(http))


BridgeFactory = Callable[..., Bridge]
