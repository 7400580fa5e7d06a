"""Order strategies: the built-in Bracket strategy, its legs priced from the fill (issue 9)."""

from __future__ import annotations

from decimal import Decimal

from _engine_support import ACCOUNT, ES, Sim, d, make_sim

from tradebridge.domain.enums import OrderType, Side
from tradebridge.sim.engine import OrdStatus, SimOrder, SimOrderStrategy, StrategyBracket

BUY, SELL = Side.BUY, Side.SELL
MKT, LMT, STP = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP
WORKING, FILLED, CANCELED = OrdStatus.WORKING, OrdStatus.FILLED, OrdStatus.CANCELED


def start(
    sim: Sim,
    action: Side = BUY,
    qty: int = 1,
    *brackets: StrategyBracket,
    order_type: OrderType = MKT,
    price: str | None = None,
) -> SimOrderStrategy:
    """Start a Bracket strategy (target 10 points, stop 5 points unless given)."""
    legs = brackets or (StrategyBracket(qty, profit_target=d(10), stop_loss=d(5)),)
    entry = sim.request(action, order_type, qty, price=price)
    result = sim.engine.start_order_strategy(entry, legs, type_id=2, params="{}", uuid="tb-s1")
    assert result.strategy is not None, result.error_text
    return result.strategy


def legs(sim: Sim, strategy: SimOrderStrategy) -> list[SimOrder]:
    links = sim.engine.order_strategy_links(strategy.id)
    return [sim.order(link.order_id) for link in links if link.order_id != strategy.entry_id]


def by_type(sim: Sim, strategy: SimOrderStrategy) -> dict[OrderType, SimOrder]:
    return {leg.version.order_type: leg for leg in legs(sim, strategy)}


def test_strategy_legs_are_priced_from_the_actual_fill() -> None:
    sim = make_sim()
    sim.price(ES, "6003.5")  # not where any reference price would have put the entry

    strategy = start(sim)

    entry = sim.order(strategy.entry_id)
    assert (entry.ord_status, entry.avg_fill_price, entry.cl_ord_id) == (FILLED, d("6003.75"), None)
    found = by_type(sim, strategy)
    assert found[LMT].version.price == d("6013.75")
    assert found[STP].version.stop_price == d("5998.75")
    assert {leg.parent_id for leg in found.values()} == {entry.id}
    assert found[LMT].oco_id == found[STP].oco_id is not None
    assert (strategy.status, strategy.uuid) == ("ActiveStrategy", "tb-s1")


def test_strategy_has_no_legs_before_its_entry_fills() -> None:
    sim = make_sim()

    strategy = start(sim, order_type=LMT, price="5990")

    assert sim.order(strategy.entry_id).ord_status is WORKING
    assert legs(sim, strategy) == []
    sim.price(ES, "5989")
    assert sorted(leg.version.order_type for leg in legs(sim, strategy)) == [LMT, STP]
    assert by_type(sim, strategy)[LMT].version.price == d(6000)  # the limit's fill, 5990


def test_strategy_target_fill_cancels_the_stop_and_finishes() -> None:
    sim = make_sim()
    strategy = start(sim)

    sim.price(ES, "6015")

    found = by_type(sim, strategy)
    assert (found[LMT].ord_status, found[STP].ord_status) == (FILLED, CANCELED)
    assert sim.net() == 0
    assert strategy.status == "ExecutionFinished"


def test_strategy_stop_fill_cancels_the_target() -> None:
    sim = make_sim()
    strategy = start(sim, SELL, 2)

    sim.price(ES, "6010")  # a short sells at the bid, 6000: its stop is 5 above

    found = by_type(sim, strategy)
    assert (found[STP].ord_status, found[LMT].ord_status) == (FILLED, CANCELED)
    assert found[STP].version.stop_price == d(6005)
    assert sim.net() == 0


def test_partial_entry_fills_give_the_legs_only_what_has_filled() -> None:
    sim = make_sim(liquidity_per_fill=1)
    strategy = start(sim, BUY, 3)

    entry = sim.order(strategy.entry_id)
    assert entry.filled_qty == 1
    assert {leg.leaves_qty for leg in legs(sim, strategy)} == {1}

    sim.price(ES, "6000.25")  # each pass fills one more
    assert {leg.leaves_qty for leg in legs(sim, strategy)} == {2}
    sim.price(ES, "6000.5")
    assert entry.ord_status is FILLED
    assert {leg.leaves_qty for leg in legs(sim, strategy)} == {3}
    # Priced from the first fill, whatever the later fills paid.
    assert by_type(sim, strategy)[LMT].version.price == d("6010.25")
    assert len(legs(sim, strategy)) == 2


def test_cancelling_the_entry_before_it_fills_stops_the_strategy() -> None:
    sim = make_sim()
    strategy = start(sim, order_type=LMT, price="5990")

    result = sim.engine.cancel_order(strategy.entry_id or 0, is_automated=True)

    assert result.ok
    assert sim.order(strategy.entry_id).ord_status is CANCELED
    assert strategy.status == "StoppedByUser"
    sim.price(ES, "5980")
    assert legs(sim, strategy) == []
    assert sim.net() == 0


def test_interrupt_cancels_the_remaining_legs() -> None:
    sim = make_sim()
    strategy = start(sim)

    result = sim.engine.interrupt_order_strategy(strategy.id)

    assert result.error_text is None
    assert {leg.ord_status for leg in legs(sim, strategy)} == {CANCELED}
    assert strategy.status == "ExecutionInterrupted"
    sim.price(ES, "5900")
    sim.price(ES, "6100")
    assert sim.net() == 1


def test_strategy_brackets_must_add_up_to_the_entry() -> None:
    sim = make_sim()
    entry = sim.request(BUY, MKT, 2)
    one = StrategyBracket(1, profit_target=d(10), stop_loss=d(5))

    result = sim.engine.start_order_strategy(entry, (one,), type_id=2, params="{}")

    assert result.strategy is None
    assert result.error_text is not None
    assert "add up to 1" in result.error_text
    assert sim.engine.orders(ACCOUNT) == []


def test_strategy_events_name_the_strategy_and_its_links_before_the_orders() -> None:
    sim = make_sim()
    strategy = start(sim)

    kinds = [(e.entity_type, e.event_type) for e in sim.events]
    first_order = kinds.index(("order", "created"))
    assert kinds.index(("orderStrategy", "created")) < kinds.index(("orderStrategyLink", "created"))
    assert kinds.index(("orderStrategyLink", "created")) < first_order
    links = [e.entity for e in sim.events if e.entity_type == "orderStrategyLink"]
    assert [getattr(link, "label", None) for link in links] == ["Entry", "StopLoss", "ProfitTarget"]
    assert strategy.id == links[0].order_strategy_id  # type: ignore[union-attr]


def test_trailing_stop_follows_the_best_price_and_never_moves_back() -> None:
    sim = make_sim()
    trailing = StrategyBracket(1, stop_loss=d(5), trailing=True)
    strategy = start(sim, BUY, 1, trailing)
    (stop,) = legs(sim, strategy)
    assert stop.version.stop_price == d("5995.25")

    for price in ("6002", "6010", "6006"):
        sim.price(ES, price)

    assert stop.version.stop_price == d(6005)  # the bid's best, 6010, less 5 points
    assert stop.ord_status is WORKING
    sim.price(ES, "6004.75")
    assert stop.ord_status is FILLED
    assert sim.net() == 0
    assert stop.avg_fill_price == Decimal("6004.75")


def test_a_trailing_stop_changed_into_a_limit_no_longer_trails() -> None:
    sim = make_sim()
    strategy = start(sim, BUY, 1, StrategyBracket(1, stop_loss=d(5), trailing=True))
    (stop,) = legs(sim, strategy)

    result = sim.engine.modify_order(stop.id, 1, OrderType.LIMIT, d(6020), None)

    assert result.failure_reason is None
    for price in ("6002", "6010"):
        sim.price(ES, price)  # the market moves: nothing trails a limit
    assert stop.version.order_type is OrderType.LIMIT
    assert stop.version.price == d(6020)
    assert stop.version.stop_price is None
    assert stop.ord_status is WORKING


def test_scale_out_brackets_each_close_their_own_quantity() -> None:
    sim = make_sim()
    brackets = (
        StrategyBracket(1, profit_target=d(5), stop_loss=d(5)),
        StrategyBracket(1, profit_target=d(10), stop_loss=d(5)),
        StrategyBracket(1, stop_loss=d(5)),  # the runner: protected by its stop alone
    )
    strategy = start(sim, BUY, 3, *brackets)
    assert [len(pair) for pair in strategy.legs] == [2, 2, 1]

    sim.price(ES, "6006")  # through the first target (6005.25) only
    assert sim.net() == 2
    stops = [sim.order(i) for i in (strategy.legs[1][0], strategy.legs[2][0])]
    assert {stop.ord_status for stop in stops} == {WORKING}
    assert sim.order(strategy.legs[0][0]).ord_status is CANCELED  # its own stop went with it

    sim.price(ES, "6011")
    assert sim.net() == 1
    assert strategy.status == "ActiveStrategy"


def test_breakeven_moves_the_other_stops_to_the_fill_after_the_first_target() -> None:
    sim = make_sim()
    brackets = tuple(
        StrategyBracket(1, profit_target=d(target), stop_loss=d(5), breakeven=True)
        for target in (5, 10)
    )
    strategy = start(sim, BUY, 2, *brackets)
    second_stop = sim.order(strategy.legs[1][0])
    assert second_stop.version.stop_price == d("5995.25")

    sim.price(ES, "6006")

    assert second_stop.version.stop_price == d("6000.25")  # the fill: break-even
    sim.price(ES, "6000")
    assert second_stop.ord_status is FILLED
    assert sim.net() == 0
