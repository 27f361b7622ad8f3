"""The firing loop against real Postgres and Kafka: on time, after restarts and deaths, and
with two replicas. Waits are on Kafka records (the broker pushes), never on fixed sleeps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.clock import SystemClock
from mesh.db import make_engine
from mesh.kafka import KafkaEventBus
from mesh.topics import Topics
from meshctl.layout import Layout
from scheduler.adapters.store import PostgresTimerStore
from scheduler.domain.timers import Timer, TimerKey, TimerState
from scheduler.main import KafkaFirer as Firer
from servicecall.internal.v1 import events_pb2 as pb
from tests.kafka_helpers import Record, TopicReader, private_topic
from tests.waiting import eventually

LEASE = timedelta(seconds=2)


def timer(fire_at: datetime) -> Timer:
    return Timer(
        key=TimerKey("it", str(uuid.uuid4()), 1, 1, fire_at),
        armed_by=f"arm-{uuid.uuid4()}",
        correlation_id="c",
        sequence=1,
    )


def fired(records: list[Record]) -> list[pb.Envelope]:
    return [pb.Envelope.FromString(r.value) for r in records]


@pytest.fixture
async def engine_for(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(fresh_database, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
def topics(infra: Layout) -> Topics:
    base = Topics.with_prefix("unused.")
    return Topics(
        base.call_events,
        base.timer_requests,
        # One partition, so the reader sees the publishing order (backlog order is checked).
        private_topic(infra.kafka_bootstrap, partitions=1),
        base.execution_requests,
        base.execution_events,
    )


@pytest.fixture
def reader(infra: Layout, topics: Topics) -> Iterator[TopicReader]:
    reader = TopicReader(infra.kafka_bootstrap, topics.timer_events)
    yield reader
    reader.close()


class Running:
    """Firers running as tasks (replicas), stopped and awaited at the end."""

    def __init__(self, infra: Layout, engine: AsyncEngine, topics: Topics) -> None:
        self._infra, self._engine, self._topics = infra, engine, topics
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._buses: list[KafkaEventBus] = []

    async def start(self) -> Firer:
        bus = KafkaEventBus(self._infra.kafka_bootstrap, f"it-{uuid.uuid4().hex[:6]}")
        await bus.start()
        self._buses.append(bus)
        firer = Firer(
            PostgresTimerStore(self._engine),
            bus,
            SystemClock(),
            self._topics,
            claim_lease=LEASE,
            max_sleep=timedelta(milliseconds=200),
        )
        self._tasks.append(asyncio.create_task(firer.run(self._stop)))
        return firer

    async def close(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        for bus in self._buses:
            await bus.close()


@pytest.fixture
async def replicas(
    infra: Layout, engine_for: AsyncEngine, topics: Topics
) -> AsyncIterator[Running]:
    running = Running(infra, engine_for, topics)
    yield running
    await running.close()


async def test_fires_at_or_after_the_due_time_never_before(
    engine_for: AsyncEngine, replicas: Running, reader: TopicReader
) -> None:
    store = PostgresTimerStore(engine_for)
    firer = await replicas.start()
    now = datetime.now(UTC)
    timers = [timer(now + timedelta(milliseconds=300 + 50 * i)) for i in range(10)]
    for t in timers:
        assert await store.arm(t)
        firer.armed(t.key.fire_at)
    envelopes = fired(await reader.wait_for(10))
    for envelope in envelopes:
        due = envelope.due_time_reached
        assert due.fired_time.ToDatetime(tzinfo=UTC) >= due.fire_time.ToDatetime(tzinfo=UTC)
    assert sorted(e.event_id for e in envelopes) == sorted(t.fire_event_id for t in timers)


async def test_timers_due_while_no_scheduler_ran_fire_right_after_start(
    engine_for: AsyncEngine, replicas: Running, reader: TopicReader
) -> None:
    store = PostgresTimerStore(engine_for)
    # Armed, then the scheduler was down while they came due (some long ago).
    now = datetime.now(UTC)
    missed = [timer(now - timedelta(seconds=s)) for s in (0.5, 5, 60, 3600)]
    for t in missed:
        await store.arm(t)
    started = datetime.now(UTC)
    await replicas.start()
    envelopes = fired(await reader.wait_for(len(missed)))
    assert sorted(e.event_id for e in envelopes) == sorted(t.fire_event_id for t in missed)
    # Backlog in due-time order, and promptly (well within a refresh of the start).
    fire_times = [e.due_time_reached.fire_time.ToDatetime(tzinfo=UTC) for e in envelopes]
    assert fire_times == sorted(fire_times)
    for e in envelopes:
        assert e.due_time_reached.fired_time.ToDatetime(tzinfo=UTC) - started < timedelta(seconds=2)


async def test_a_claim_whose_process_died_before_publishing_fires_after_its_lease(
    engine_for: AsyncEngine, replicas: Running, reader: TopicReader
) -> None:
    store = PostgresTimerStore(engine_for)
    t = timer(datetime.now(UTC) - timedelta(milliseconds=10))
    await store.arm(t)
    # What a process killed between claim and publish leaves behind: a claim, no message.
    claimed_at = datetime.now(UTC)
    [claimed] = await store.claim_due(claimed_at, 10, LEASE)
    assert claimed.timer_id == t.timer_id
    await replicas.start()
    [envelope] = fired(await reader.wait_for(1, timeout=LEASE.total_seconds() + 10))
    assert envelope.event_id == t.fire_event_id  # same id: the orchestrator dedupes a repeat
    assert envelope.due_time_reached.fired_time.ToDatetime(tzinfo=UTC) >= claimed_at + LEASE
    stored = await store.get(t.timer_id)
    assert stored is not None and stored.state is TimerState.FIRED


async def test_two_replicas_fire_each_timer_once(
    engine_for: AsyncEngine, replicas: Running, reader: TopicReader
) -> None:
    store = PostgresTimerStore(engine_for)
    first, second = await replicas.start(), await replicas.start()
    now = datetime.now(UTC)
    timers = [timer(now + timedelta(milliseconds=500 + i)) for i in range(400)]
    for i, t in enumerate(timers):
        await store.arm(t)
        (first if i % 2 else second).armed(t.key.fire_at)
    envelopes = fired(await reader.wait_for(len(timers)))
    ids = [e.event_id for e in envelopes]
    assert len(ids) == len(set(ids)) == len(timers)
    # A firer counts a batch once its mark is written, just after the batch is published.
    await eventually(lambda: first.fired + second.fired >= len(timers))
    assert first.fired + second.fired == len(timers)
    assert first.fired > 0 and second.fired > 0
    # Every timer is marked fired, so no lease can run out later and fire one again.
    assert await store.upcoming(now + timedelta(hours=1), 10) == []
