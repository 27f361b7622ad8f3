"""Holding an attempt until its not-before time by the wall clock, with fake time."""

from __future__ import annotations

from datetime import timedelta

from executor.timing import LatenessReport, wait_until
from tests.unit.executor.fakes import T0, FakeClock, FakeSleeper


async def test_due_already_returns_at_once() -> None:
    clock = FakeClock(T0)
    sleeper = FakeSleeper(clock)
    assert await wait_until(T0 - timedelta(seconds=3), clock, sleeper) == T0
    assert await wait_until(T0, clock, sleeper) == T0
    assert sleeper.calls == []


async def test_sleeps_for_the_remaining_time() -> None:
    clock = FakeClock(T0)
    sleeper = FakeSleeper(clock)
    due = T0 + timedelta(seconds=1.5)
    assert await wait_until(due, clock, sleeper) == due
    assert sleeper.calls == [1.5]


async def test_an_early_wake_up_is_re_armed_until_the_wall_clock_says_due() -> None:
    clock = FakeClock(T0)
    sleeper = FakeSleeper(clock, early=timedelta(microseconds=700))
    due = T0 + timedelta(seconds=2)
    reached = await wait_until(due, clock, sleeper)
    assert reached >= due
    assert len(sleeper.calls) >= 2
    assert sleeper.calls[0] == 2.0
    assert all(0 < s <= 0.0007 for s in sleeper.calls[1:])


async def test_a_wall_clock_jump_forward_ends_the_wait() -> None:
    clock = FakeClock(T0)

    class JumpingSleeper(FakeSleeper):
        async def sleep(self, seconds: float) -> None:
            self.calls.append(seconds)
            clock.advance(timedelta(minutes=5))  # NTP stepped the clock

    sleeper = JumpingSleeper(clock)
    reached = await wait_until(T0 + timedelta(seconds=10), clock, sleeper)
    assert reached == T0 + timedelta(minutes=5)
    assert sleeper.calls == [10.0]


def test_lateness_report_summarises_once_per_interval() -> None:
    report = LatenessReport(interval_s=10.0)
    assert report.add(5.0, now_s=100.0) is None
    for i in range(98):
        assert report.add(1.0 + i / 100, now_s=101.0 + i / 100) is None
    summary = report.add(50.0, now_s=110.0)
    assert summary == {"sent": 100, "late_ms_p50": 1.5, "late_ms_p99": 50.0, "late_ms_max": 50.0}
    # a new interval starts empty
    assert report.add(2.0, now_s=111.0) is None
    assert report.add(3.0, now_s=120.0) == {
        "sent": 2,
        "late_ms_p50": 3.0,
        "late_ms_p99": 3.0,
        "late_ms_max": 3.0,
    }
