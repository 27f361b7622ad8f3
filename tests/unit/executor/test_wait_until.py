"""Holding an attempt until its not-before time by the wall clock, with fake time."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from executor.service_layer.timing import LatenessReport, SharedWakeups, wait_until
from tests.fakes.executor.ports import T0, FakeClock, FakeSleeper


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


async def test_waiters_in_one_millisecond_share_one_wake_up_at_its_start() -> None:
    clock = FakeClock(T0)
    sleeper = FakeSleeper(clock)
    wakeups = SharedWakeups(clock, sleeper)
    slice_start = T0 + timedelta(seconds=2)
    whens = [slice_start + timedelta(microseconds=us) for us in (0, 250, 999)]
    woke_at: list[datetime] = []

    async def wait(when: datetime) -> None:
        await wakeups.until(when)
        woke_at.append(clock.now())

    await asyncio.gather(*(wait(w) for w in whens))
    assert sleeper.calls == [2.0]  # one sleep for the three of them
    assert woke_at == [slice_start] * 3  # never after `when`, at most 1 ms before it


async def test_a_waiter_whose_millisecond_has_begun_does_not_wait() -> None:
    clock = FakeClock(T0 + timedelta(microseconds=400))
    sleeper = FakeSleeper(clock)
    await SharedWakeups(clock, sleeper).until(T0 + timedelta(microseconds=900))
    assert sleeper.calls == []


async def test_a_later_millisecond_gets_a_wake_up_of_its_own() -> None:
    clock = FakeClock(T0)
    sleeper = FakeSleeper(clock)
    wakeups = SharedWakeups(clock, sleeper)
    await wakeups.until(T0 + timedelta(milliseconds=1))
    await wakeups.until(T0 + timedelta(milliseconds=3, microseconds=500))
    assert clock.now() == T0 + timedelta(milliseconds=3)
    assert len(sleeper.calls) == 2


async def test_the_others_of_a_slice_wake_if_its_sleeper_is_cancelled() -> None:
    clock = FakeClock(T0)
    sleeper = FakeSleeper(clock)
    sleeper.gate = asyncio.Event()  # the first waiter's sleep never ends by itself
    wakeups = SharedWakeups(clock, sleeper)
    first = asyncio.create_task(wakeups.until(T0 + timedelta(seconds=1)))
    await asyncio.wait_for(sleeper.sleeping.wait(), 5)
    second = asyncio.create_task(wakeups.until(T0 + timedelta(seconds=1, microseconds=10)))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait_for(second, 5)  # woken, not left waiting forever
    assert first.cancelled()
