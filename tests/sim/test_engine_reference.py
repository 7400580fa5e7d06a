"""Accounts, contracts (lookup, expiry, listing, suggestions) and the price path."""

from __future__ import annotations

from decimal import Decimal

import pytest
from _engine_support import ACCOUNT, APEX_ACCOUNT, CL, ES, MNQ, make_sim

from tradebridge.domain.products import PRODUCTS
from tradebridge.sim.clock import ManualClock
from tradebridge.sim.config import SimConfig
from tradebridge.sim.engine import SimEngine


def engine(seed: int = 7, step_s: float = 1.0) -> tuple[SimEngine, ManualClock]:
    clock = ManualClock()
    return SimEngine(SimConfig(seed=seed, price_step_s=step_s), clock), clock


# --- accounts ----------------------------------------------------------------------------


def test_accounts_come_from_the_configured_users() -> None:
    sim = make_sim()
    assert [(a.id, a.user_id) for a in sim.engine.accounts()] == [
        (100001, 1),
        (100002, 1),
        (200010, 2),
        (200011, 2),
    ]
    assert [a.id for a in sim.engine.accounts(user_id=2)] == [200010, 200011]
    assert sim.engine.accounts(user_id=99) == []


def test_account_lookups_by_id_name_and_bridge_id_agree() -> None:
    sim = make_sim()
    account = sim.engine.account(APEX_ACCOUNT)
    assert account is not None
    assert sim.engine.account_by_name("PAAPEX1361890000010") is account
    assert sim.engine.account_by_bridge_id("D200010") is account
    assert sim.engine.account_config(APEX_ACCOUNT).name == account.name
    assert sim.engine.account(1) is None
    assert sim.engine.account_by_name("nobody") is None
    assert sim.engine.account_by_bridge_id("D0") is None


def test_duplicate_account_ids_in_config_are_refused() -> None:
    config = SimConfig.model_validate(
        {
            "users": [
                {"id": 1, "name": "a", "password": "a",
                 "accounts": [{"id": 5, "name": "A", "bridge_id": "D5"}]},
                {"id": 2, "name": "b", "password": "b",
                 "accounts": [{"id": 5, "name": "B", "bridge_id": "D6"}]},
            ]
        }
    )  # fmt: skip
    with pytest.raises(ValueError, match="configured twice"):
        SimEngine(config, ManualClock())


# --- contracts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected", "expired"),
    [
        ("MNQZ6", "MNQZ6", False),
        ("MNQH7", "MNQH7", False),
        ("MNQZ2026", "MNQZ6", False),
        ("mnqz6", "MNQZ6", False),
        ("MNQZ5", "MNQZ5", True),  # expired on 2025-12-19, still found
        ("CLZ6", "CLZ6", True),  # expired on 2026-11-20
        ("CLF7", "CLF7", False),
        ("GCZ6", "GCZ6", False),
        ("MNQF7", None, False),  # MNQ lists no January contract
        ("XYZZ6", None, False),
        ("MNQ", None, False),
        ("", None, False),
        ("MNQ1!", None, False),
    ],
)
def test_find_contract_parses_names_and_keeps_expired_ones(
    name: str, expected: str | None, expired: bool
) -> None:
    sim = make_sim()
    contract = sim.engine.find_contract(name)
    if expected is None:
        assert contract is None
        return
    assert contract is not None
    assert contract.name == expected
    assert sim.engine.is_expired(contract) is expired
    assert sim.engine.contract(contract.id) is contract
    assert contract.product is PRODUCTS[contract.symbol.root]


def test_contract_ids_are_stable_across_engines_and_lookup_order() -> None:
    one, _ = engine()
    two, _ = engine()
    names = [ES, MNQ, CL, "MNQZ5"]
    first = {n: one.find_contract(n).id for n in names}  # type: ignore[union-attr]
    second = {n: two.find_contract(n).id for n in reversed(names)}  # type: ignore[union-attr]
    assert first == second
    assert len(set(first.values())) == len(names)


def test_contract_by_id_finds_contracts_not_yet_looked_up_by_name() -> None:
    one, _ = engine()
    two, _ = engine()
    contract_id = one.find_contract("NQM7").id  # type: ignore[union-attr]
    found = two.contract(contract_id)
    assert found is not None
    assert found.name == "NQM7"
    assert two.contract(1) is None
    assert two.contract(contract_id + 1) is None  # NQN7: not a listed month


def test_maturity_id_is_one_per_root_and_month() -> None:
    sim = make_sim()
    es, es2, mnq = (sim.contract(n) for n in (ES, "ESZ2026", MNQ))
    assert es.maturity_id == es2.maturity_id
    assert es.maturity_id != mnq.maturity_id


def test_listed_contracts_are_four_unexpired_per_product() -> None:
    sim = make_sim()
    listed = sim.engine.listed_contracts()
    assert len(listed) == 4 * len(PRODUCTS)
    assert not any(sim.engine.is_expired(c) for c in listed)
    names = {c.name for c in listed}
    assert {"MNQZ6", "MNQH7", "MNQM7", "MNQU7", "CLF7", "ESZ6"} <= names
    assert "CLZ6" not in names
    assert "MNQZ5" not in names


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("MNQ", 10, ["MNQZ6", "MNQH7", "MNQM7", "MNQU7"]),
        ("MNQ", 2, ["MNQZ6", "MNQH7"]),
        ("mnq", 1, ["MNQZ6"]),
        ("ES", 10, ["ESZ6", "ESH7", "ESM7", "ESU7"]),
        ("MNQH", 10, ["MNQH7"]),
        ("MNQU8", 10, ["MNQU8"]),  # further out than the listing, but a real contract
        ("MNQZ5", 10, []),  # expired
        ("ZZZ", 10, []),
        ("MNQ", 0, []),
    ],
)
def test_suggest_contracts_matches_prefix_front_month_first(
    text: str, limit: int, expected: list[str]
) -> None:
    sim = make_sim()
    assert [c.name for c in sim.engine.suggest_contracts(text, limit)] == expected


# --- prices ------------------------------------------------------------------------------


def _walk(eng: SimEngine, clock: ManualClock, name: str, seconds: list[int]) -> list[Decimal]:
    contract = eng.find_contract(name)
    assert contract is not None
    out = []
    for s in seconds:
        clock.advance(s)
        out.append(eng.quote(contract.id).last)
    return out


def test_price_path_same_seed_gives_same_prices() -> None:
    one, one_clock = engine(seed=11)
    two, two_clock = engine(seed=11)
    steps = [1, 5, 60, 600, 3600]
    assert _walk(one, one_clock, MNQ, steps) == _walk(two, two_clock, MNQ, steps)


def test_price_path_differs_by_seed_and_by_contract() -> None:
    steps = [60] * 10
    base = _walk(*engine(seed=11), MNQ, steps)
    assert base != _walk(*engine(seed=12), MNQ, steps)
    assert base != _walk(*engine(seed=11), "MNQH7", steps)


def test_price_path_does_not_depend_on_how_often_it_is_read() -> None:
    often, often_clock = engine()
    once, once_clock = engine()
    assert (
        _walk(often, often_clock, ES, [0] + [1] * 500)[-1]
        == _walk(once, once_clock, ES, [0, 500])[-1]
    )


def test_price_path_moves_on_tick_near_the_base_price() -> None:
    eng, clock = engine()
    prices = _walk(eng, clock, ES, [0] + [1] * 2000)
    product = PRODUCTS["ES"]
    assert len(set(prices)) > 10
    assert all(product.is_on_tick(p) for p in prices)
    assert all(abs(p - product.base_price) < 500 for p in prices)


def test_quote_ask_is_one_tick_above_bid_which_is_last() -> None:
    sim = make_sim()
    quote = sim.engine.quote(sim.contract(CL).id)
    assert (quote.bid, quote.ask, quote.last) == (Decimal(70), Decimal("70.01"), Decimal(70))
    assert quote.contract_id == sim.contract(CL).id
    assert quote.timestamp == sim.clock.now()


def test_set_price_off_tick_or_unknown_contract_raises() -> None:
    sim = make_sim()
    with pytest.raises(ValueError, match=r"multiple of 0\.25"):
        sim.engine.set_price(sim.contract(ES).id, Decimal("6000.1"))
    with pytest.raises(ValueError, match="positive"):
        sim.engine.set_price(sim.contract(ES).id, Decimal(0))
    with pytest.raises(KeyError):
        sim.engine.set_price(17, Decimal(1))
    with pytest.raises(KeyError):
        sim.engine.quote(17)


def test_set_price_then_walk_continues_from_the_new_price() -> None:
    eng, clock = engine()
    contract = eng.find_contract(ES)
    assert contract is not None
    eng.set_price(contract.id, Decimal(5000))
    clock.advance(3)
    assert abs(eng.quote(contract.id).last - 5000) <= Decimal("0.75")


def test_cash_balance_unknown_account_raises() -> None:
    sim = make_sim()
    with pytest.raises(KeyError):
        sim.engine.cash_balance(1)
    assert sim.engine.cash_balance(ACCOUNT).account_id == ACCOUNT
