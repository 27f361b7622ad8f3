"""The near-term window decides when to wake, with bounded memory; time is passed in."""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.domain.window import TimerWindow
from tests.fakes.clock import T0

SPAN = timedelta(minutes=5)
REFRESH = timedelta(seconds=1)


def at(seconds: float) -> tuple[datetime, datetime]:
    """(fire time, attention time) of an unclaimed timer."""
    return (T0 + timedelta(seconds=seconds), T0 + timedelta(seconds=seconds))


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
    window.load(T0, [(T0, lease_end)], truncated=False)
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
