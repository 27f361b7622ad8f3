"""The firing loop over the in-memory store and bus, with a clock that moves only on demand.

The sleeper is replaced by one that records until when the loop wanted to sleep and moves the
fake clock there, so no test sleeps for real.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from mesh.ports import Clock, OutgoingMessage
from mesh.topics import Topics
from scheduler.domain.timers import Timer, TimerKey, TimerState
from scheduler.main import KafkaFirer as Firer
from scheduler.service_layer.firing import EARLY_CHUNK
from servicecall.internal.v1 import events_pb2 as pb
from tests.fakes.bus import InMemoryEventBus
from tests.fakes.clock import T0, FakeClock
from tests.fakes.timers import InMemoryTimerStore

TOPICS = Topics.with_prefix("t.")
LEASE = timedelta(seconds=10)


def timer(fire_at: datetime) -> Timer:
    return Timer(
        key=TimerKey("t", str(uuid.uuid4()), 1, 1, fire_at),
        armed_by=f"e-{uuid.uuid4()}",
        correlation_id="c",
        sequence=1,
    )


class RecordingSleeper:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.slept_until: list[datetime] = []

    async def __call__(
        self, _clock: Clock, until: datetime, wake: asyncio.Event, stop: asyncio.Event
    ) -> None:
        self.slept_until.append(until)
        if not wake.is_set():
            self.clock.current = max(self.clock.current, until)


class FlakyBus(InMemoryEventBus):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("kafka down")
        await super().publish(messages)


def fired_times(bus: InMemoryEventBus) -> list[datetime]:
    out = []
    for _key, value in bus.on(TOPICS.timer_events):
        fired = pb.Envelope.FromString(value).due_time_reached
        out.append(fired.fire_time.ToDatetime(tzinfo=T0.tzinfo))
    return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def firer(
    store: InMemoryTimerStore,
    bus: InMemoryEventBus,
    clock: FakeClock,
    sleeper: RecordingSleeper,
    **kwargs: object,
) -> Firer:
    return Firer(store, bus, clock, TOPICS, claim_lease=LEASE, sleeper=sleeper, **kwargs)  # type: ignore[arg-type]


async def test_sleeps_exactly_until_the_next_timer_and_fires_it_then(clock: FakeClock) -> None:
    store, bus, sleeper = InMemoryTimerStore(), InMemoryEventBus(), RecordingSleeper(clock)
    due = T0 + timedelta(milliseconds=250)
    await store.arm(timer(due))
    f = firer(store, bus, clock, sleeper)
    stop = asyncio.Event()
    assert await f.step(stop) == 0
    assert sleeper.slept_until == [due]
    assert bus.published == []  # nothing before its time
    assert await f.step(stop) == 1
    assert fired_times(bus) == [due]


async def test_never_fires_a_microsecond_early(clock: FakeClock) -> None:
    store, bus, sleeper = InMemoryTimerStore(), InMemoryEventBus(), RecordingSleeper(clock)
    await store.arm(timer(T0 + timedelta(seconds=1)))
    f = firer(store, bus, clock, sleeper)
    clock.current = T0 + timedelta(seconds=1) - timedelta(microseconds=1)
    assert await f.fire_due() == 0
    assert bus.published == []


async def test_an_earlier_arm_in_this_process_wakes_the_sleeping_loop(clock: FakeClock) -> None:
    store, bus, sleeper = InMemoryTimerStore(), InMemoryEventBus(), RecordingSleeper(clock)
    await store.arm(timer(T0 + timedelta(seconds=30)))
    f = firer(store, bus, clock, sleeper, max_sleep=timedelta(minutes=1))
    await f.step(asyncio.Event())
    assert sleeper.slept_until == [T0 + timedelta(seconds=30)]
    clock.current = T0 + timedelta(seconds=1)  # as if it had slept a while
    early = timer(T0 + timedelta(seconds=2))
    await store.arm(early)
    f.armed(early.key.fire_at)
    # The loop's next sleep aims at the new, earlier timer, without asking Postgres.
    await f.step(asyncio.Event())
    assert sleeper.slept_until[-1] == T0 + timedelta(seconds=2)


async def test_without_arms_it_rereads_postgres_every_refresh(clock: FakeClock) -> None:
    store, bus, sleeper = InMemoryTimerStore(), InMemoryEventBus(), RecordingSleeper(clock)
    f = firer(store, bus, clock, sleeper, max_sleep=timedelta(seconds=1))
    await f.step(asyncio.Event())
    assert sleeper.slept_until == [T0 + timedelta(seconds=1)]
    # Armed by another replica: this process hears nothing, and finds it on the reload.
    await store.arm(timer(T0 + timedelta(seconds=1.5)))
    await f.step(asyncio.Event())
    assert sleeper.slept_until[-1] == T0 + timedelta(seconds=1.5)
    assert await f.step(asyncio.Event()) == 1


async def test_a_burst_drains_in_due_order_in_batches(clock: FakeClock) -> None:
    store, bus, sleeper = InMemoryTimerStore(), InMemoryEventBus(), RecordingSleeper(clock)
    dues = [T0 + timedelta(microseconds=i) for i in range(1200)]
    for due in reversed(dues):
        await store.arm(timer(due))
    f = firer(store, bus, clock, sleeper, batch_size=500)
    clock.current = T0 + timedelta(seconds=1)
    counts = [await f.step(asyncio.Event()) for _ in range(3)]
    assert counts == [500, 500, 200]
    assert fired_times(bus) == dues


async def test_memory_stays_bounded_with_many_pending(clock: FakeClock) -> None:
    store, bus, sleeper = InMemoryTimerStore(), InMemoryEventBus(), RecordingSleeper(clock)
    for i in range(5000):
        await store.arm(timer(T0 + timedelta(milliseconds=i)))
    f = firer(store, bus, clock, sleeper, window_capacity=64)
    clock.current = T0 + timedelta(seconds=10)
    fired = 0
    while fired < 5000:
        fired += await f.step(asyncio.Event())
        assert len(f.window) <= 64
    assert fired_times(bus) == sorted(fired_times(bus))


async def test_a_claim_left_unpublished_fires_again_after_its_lease(clock: FakeClock) -> None:
    store, bus, sleeper = InMemoryTimerStore(), FlakyBus(failures=1), RecordingSleeper(clock)
    t = timer(T0)
    await store.arm(t)
    f = firer(store, bus, clock, sleeper, max_sleep=timedelta(minutes=1))
    with pytest.raises(ConnectionError):
        await f.step(asyncio.Event())
    assert bus.published == []
    await f.step(asyncio.Event())  # nothing claimable: sleeps until the lease ends
    assert sleeper.slept_until[-1] == T0 + LEASE
    assert await f.step(asyncio.Event()) == 1
    stored = await store.get(t.timer_id)
    assert stored is not None and stored.state is TimerState.FIRED


async def test_crowded_hand_offs_all_fire_by_their_time_at_the_pull_rate(
    clock: FakeClock,
) -> None:
    store, bus, sleeper = InMemoryTimerStore(), InMemoryEventBus(), RecordingSleeper(clock)
    due = T0 + timedelta(seconds=5)
    for _ in range(300):
        await store.arm(timer(due))
    f = firer(
        store,
        bus,
        clock,
        sleeper,
        batch_size=50,
        max_sleep=timedelta(minutes=1),
        handoff_pull_rate=100.0,
        handoff_pull_max=timedelta(seconds=10),
    )
    stop = asyncio.Event()
    while f.fired < 300:
        await f.step(stop)
    fired_at = []
    for _key, value in bus.on(TOPICS.timer_events):
        fired = pb.Envelope.FromString(value).due_time_reached
        fired_at.append(fired.fired_time.ToDatetime(tzinfo=T0.tzinfo))
    # 300 at 100/s: the first goes 2.99 s early, and every one has gone by its fire time.
    assert min(fired_at) == due - timedelta(seconds=2.99)
    assert max(fired_at) <= due
    # Never much faster than the rate asks for: each one at most a chunk before its turn.
    for i, at in enumerate(sorted(fired_at)):
        assert at >= due - timedelta(seconds=(299 - i) / 100) - EARLY_CHUNK


async def test_after_a_full_batch_tenants_take_turns_at_the_claims(clock: FakeClock) -> None:
    # Tenant a's crowd of 30 and tenant b's one timer a millisecond after them, all overdue:
    # in fire-time order b's would be claimed in the fourth batch of 10, after all of a's.
    store, bus, sleeper = InMemoryTimerStore(), InMemoryEventBus(), RecordingSleeper(clock)
    crowd = [replace(timer(T0), key=replace(timer(T0).key, tenant_id="a")) for _ in range(30)]
    after = T0 + timedelta(milliseconds=1)
    late = replace(timer(after), key=replace(timer(after).key, tenant_id="b"))
    await store.arm_many([*crowd, late])
    f = firer(store, bus, clock, sleeper, batch_size=10)
    clock.current = T0 + timedelta(seconds=1)
    assert await f.fire_due() == 10  # a full batch: a crowd
    assert late.timer_id not in {t.timer_id for t in await_fired(store)}
    assert await f.fire_due() == 10
    assert late.timer_id in {t.timer_id for t in await_fired(store)}


def await_fired(store: InMemoryTimerStore) -> list[Timer]:
    return [r.timer for r in store.rows.values() if r.timer.state is TimerState.FIRED]
