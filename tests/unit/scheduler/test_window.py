"""The near-term window decides when to wake, with bounded memory; time is passed in."""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.domain.timers import HANDOFF_PURPOSE, Upcoming
from scheduler.domain.window import TimerWindow
from servicecall.internal.v1 import events_pb2 as pb
from tests.fakes.clock import T0

SPAN = timedelta(minutes=5)
REFRESH = timedelta(seconds=1)


def at(seconds: float) -> Upcoming:
    """An unclaimed timer that must not fire early."""
    return Upcoming(T0 + timedelta(seconds=seconds), T0 + timedelta(seconds=seconds))


def handoff(seconds: float) -> Upcoming:
    """An unclaimed hand-off timer (may be pulled forward)."""
    return Upcoming(T0 + timedelta(seconds=seconds), T0 + timedelta(seconds=seconds), True)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_an_empty_window_is_complete_for_its_span_and_wakes_at_the_refresh() -> None:
    window = TimerWindow(SPAN, capacity=10)
    assert window.needs_load(T0)
    window.load(T0, [], truncated=False)
    assert not window.needs_load(T0 + SPAN - timedelta(microseconds=1))
    assert window.needs_load(T0 + SPAN)
    assert window.next_wake(T0, REFRESH) == T0 + REFRESH


def test_wakes_exactly_at_the_earliest_timer_and_never_before() -> None:
    window = TimerWindow(SPAN, capacity=10)
    window.load(T0, [at(0.25), at(0.5)], truncated=False)
    assert window.next_wake(T0, REFRESH) == T0 + timedelta(seconds=0.25)
    assert not window.due(T0 + timedelta(seconds=0.25) - timedelta(microseconds=1))
    assert window.due(T0 + timedelta(seconds=0.25))


def test_an_earlier_arm_wakes_the_loop_a_later_one_does_not() -> None:
    window = TimerWindow(SPAN, capacity=10)
    window.load(T0, [at(0.5)], truncated=False)
    assert window.arm(T0 + timedelta(seconds=0.1)) is True
    assert window.next_wake(T0, REFRESH) == T0 + timedelta(seconds=0.1)
    assert window.arm(T0 + timedelta(seconds=0.3)) is False
    assert len(window) == 3


def test_an_arm_past_what_the_window_knows_is_left_to_the_next_load() -> None:
    window = TimerWindow(SPAN, capacity=10)
    window.load(T0, [at(0.5)], truncated=False)
    assert window.arm(T0 + SPAN + timedelta(seconds=1)) is False
    assert len(window) == 1


def test_a_truncated_load_is_trusted_only_up_to_its_last_fire_time() -> None:
    window = TimerWindow(SPAN, capacity=3)
    window.load(T0, [at(1), at(2), at(3)], truncated=True)
    assert window.complete_until == T0 + timedelta(seconds=3)
    window.fired_up_to(T0 + timedelta(seconds=2.5))
    assert window.next_wake(T0 + timedelta(seconds=2.5), timedelta(hours=1)) == T0 + timedelta(
        seconds=3
    )
    assert window.needs_load(T0 + timedelta(seconds=3))


def test_a_claimed_timer_is_due_again_only_when_its_lease_ends() -> None:
    window = TimerWindow(SPAN, capacity=10)
    lease_end = T0 + timedelta(seconds=10)
    window.load(T0, [Upcoming(T0, lease_end)], truncated=False)
    assert not window.due(T0 + timedelta(seconds=9))
    assert window.due(lease_end)


def test_memory_stays_bounded_however_many_timers_are_armed() -> None:
    window = TimerWindow(SPAN, capacity=100)
    window.load(T0, [], truncated=False)
    for i in range(10_000, 0, -1):
        window.arm(T0 + timedelta(milliseconds=i))
    assert len(window) == 100
    # The forgotten ones are not trusted to be absent: the window ends where it kept.
    assert window.complete_until == T0 + timedelta(milliseconds=100)


def test_fired_entries_leave_and_a_failed_claim_comes_back_at_its_lease_end() -> None:
    window = TimerWindow(SPAN, capacity=10)
    window.load(T0, [at(0), at(1)], truncated=False)
    window.fired_up_to(T0)
    assert len(window) == 1
    window.retry_at(T0 + timedelta(seconds=10))
    window.fired_up_to(T0 + timedelta(seconds=1))
    assert window.next_wake(T0 + timedelta(seconds=1), timedelta(hours=1)) == T0 + timedelta(
        seconds=10
    )


def test_the_hand_off_purpose_is_the_contracts() -> None:
    assert pb.TIMER_PURPOSE_HANDOFF == HANDOFF_PURPOSE


def test_a_lone_hand_off_fires_at_its_own_time() -> None:
    window = TimerWindow(SPAN, capacity=100, pull_rate=10, pull_max=timedelta(seconds=5))
    window.load(T0, [handoff(1), handoff(3)], truncated=False)
    assert window.next_wake(T0, timedelta(hours=1)) == s(1)
    assert not window.due(s(0.99))


def test_crowded_hand_offs_are_spread_ahead_at_the_pull_rate() -> None:
    # 5 hand-offs firing at 2 s, 10 per second: the first must go 0.4 s early so that the
    # last goes at 2 s and none went faster than the rate.
    window = TimerWindow(SPAN, capacity=100, pull_rate=10, pull_max=timedelta(seconds=5))
    window.load(T0, [handoff(2)] * 5, truncated=False)
    assert window.next_wake(T0, timedelta(hours=1)) == s(1.6)
    # At 1.75 s two are behind the schedule: claim two of those firing at 2 s.
    assert window.early_handoffs(s(1.75), timedelta(0)) == (2, s(2))
    # A chunk ahead takes the next one with them.
    assert window.early_handoffs(s(1.75), timedelta(milliseconds=50)) == (3, s(2))
    window.fired_up_to(s(1.75))
    assert len(window) == 3
    assert window.next_wake(s(1.75), timedelta(hours=1)) == s(1.8)


def test_pulling_stops_at_the_maximum_and_leaves_other_timers_alone() -> None:
    window = TimerWindow(SPAN, capacity=100, pull_rate=1, pull_max=timedelta(seconds=2))
    window.load(T0, [at(5), *[handoff(10)] * 10, at(10)], truncated=False)
    # Ten at 1/s would need 9 s; the allowance is 2 s.
    assert window.next_wake(T0, timedelta(hours=1)) == s(5)
    window.fired_up_to(s(5))
    assert window.next_wake(s(5), timedelta(hours=1)) == s(8)
    # At 8 s eight hand-offs are due (held at the 2 s maximum), the ninth at 9 s, the last
    # at its own 10 s; the other timer at 10 s is not due, even a chunk ahead.
    assert window.early_handoffs(s(8), timedelta(milliseconds=50)) == (8, s(10))
    assert window.early_handoffs(s(9), timedelta(0)) == (9, s(10))
    window.fired_up_to(s(8), timedelta(seconds=3))
    # Left: the last hand-off (not pulled: it fires at its own time) and the other timer.
    assert len(window) == 2
    assert window.next_wake(s(8), timedelta(hours=1)) == s(10)


def test_without_a_pull_rate_nothing_is_pulled() -> None:
    window = TimerWindow(SPAN, capacity=100)
    window.load(T0, [handoff(2)] * 50, truncated=False)
    assert window.next_wake(T0, timedelta(hours=1)) == s(2)
    assert window.early_handoffs(s(1), timedelta(0)) == (0, s(1))
