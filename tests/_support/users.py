"""A simulator with Tradovate users of the test's own: alice (two accounts) and bob (one).

Their passwords are minted per test (``secrets``), never the simulator's published ones, so
a test can also check that a password never reaches output or logs.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tradebridge.sim.config import SimAccountConfig, SimConfig, SimUserConfig
from tradebridge.sim.server import SimServer

ALICE = ("ALICE000001", "ALICE000002")
BOB = "BOB00000001"
SIM_IDS = {ALICE[0]: 300001, ALICE[1]: 300002, BOB: 400001}
USER_IDS = {"alice": 31, "bob": 42}


def bridge_id(account: str) -> str:
    """Return the simulator's bridge id (``D...``) of one of these accounts."""
    return f"D{SIM_IDS[account]}"


def sim_users(passwords: dict[str, str]) -> list[SimUserConfig]:
    """Return alice and bob as simulator users with these passwords."""

    def account(name: str) -> SimAccountConfig:
        return SimAccountConfig(id=SIM_IDS[name], name=name, bridge_id=bridge_id(name))

    return [
        SimUserConfig(id=USER_IDS["alice"], name="alice", password=passwords["alice"],
                      accounts=[account(ALICE[0]), account(ALICE[1])]),
        SimUserConfig(id=USER_IDS["bob"], name="bob", password=passwords["bob"],
                      accounts=[account(BOB)]),
    ]  # fmt: skip


@pytest.fixture
def passwords() -> dict[str, str]:
    """Mint alice's and bob's passwords for this test."""
    return {name: secrets.token_urlsafe(12) for name in USER_IDS}


@pytest.fixture
def users_sim(passwords: dict[str, str]) -> Iterator[SimServer]:
    """Run a simulator whose users are alice and bob."""
    with SimServer(SimConfig(port=0, users=sim_users(passwords))) as server:
        yield server
