"""``KillSwitches.newest``: two views of the switches, the later change of each scope wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tradebridge.domain.kill import KillSwitch, KillSwitches

T0 = datetime(2026, 12, 7, 14, 30, tzinfo=UTC)


def _switch(account: str | None, engaged: bool, at: datetime | None) -> KillSwitch:
    return KillSwitch(account=account, engaged=engaged, changed_by="ops", changed_at=at)


def test_newest_keeps_each_scopes_later_change_whichever_view_has_it() -> None:
    claim = KillSwitches.of([
        _switch(None, True, T0 + timedelta(seconds=2)),  # thrown after the watch's read
        _switch("A", False, T0),
    ])  # fmt: skip
    watch = KillSwitches.of([
        _switch(None, False, T0),
        _switch("A", True, T0 + timedelta(seconds=1)),  # thrown after the claim
        _switch("B", True, None),
    ])  # fmt: skip

    merged = claim.newest(watch)

    assert merged.global_on
    assert merged.stopping("A") is not None
    assert merged.switches["account:A"].engaged
    assert merged.switches["account:B"].engaged
    assert watch.newest(claim).switches == merged.switches


def test_newest_forced_by_either_view_stays_forced() -> None:
    assert KillSwitches(forced=True).newest(KillSwitches()).global_on
    assert KillSwitches().newest(KillSwitches(forced=True)).global_on
    assert not KillSwitches().newest(KillSwitches()).global_on
