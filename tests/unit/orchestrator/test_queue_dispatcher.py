"""The queue dispatcher's pass over fakes with an injected clock: held calls go out at the
queue's rate and within its concurrency, not while it is paused, and one at a time per
ordering key in due order, under retries, cancels and both failure policies."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from orchestrator.domain.commands import RecordExecutionFailed, RecordExecutionSucceeded
from orchestrator.domain.errors import UnknownQueue
from orchestrator.domain.model import DEFAULT_TIMING, ExecutionResult
from orchestrator.domain.queues import OrderingFailurePolicy, QueueState
from orchestrator.domain.states import (
    Canceled,
    Dispatched,
    Failed,
    Scheduled,
    ServiceCallState,
    Succeeded,
)
from orchestrator.ports import Accepted, Replay, Submission
from orchestrator.service_layer.queues import QueueDispatcher, Queues
from tests.builders import new_tenant
from tests.contracts.queues import Harness, queue, submit
from tests.fakes.clock import FakeClock
from tests.fakes.queues import InMemoryQueueConfigs, InMemoryQueueStore
from tests.fakes.store import InMemoryServiceCallStore
from tests.services import orchestrator_over

LEASE = DEFAULT_TIMING.dispatch_lease
_events = itertools.count()


class World:
    def __init__(self) -> None:
        self.calls_store = InMemoryServiceCallStore()
        self.store = InMemoryQueueStore(self.calls_store)
        self.configs = InMemoryQueueConfigs(self.store)
        self.clock = FakeClock()
        self.calls = orchestrator_over(self.calls_store, self.clock, self.configs)
        self.h = Harness(self.store, self.calls, self.configs, self.clock)
        self.dispatcher = QueueDispatcher(
            self.store, self.calls, self.clock, DEFAULT_TIMING.handoff_lead
        )
        self.queues = Queues(self.store, self.configs, self.calls, self.clock)
        self.tenant = new_tenant()

    async def make_queue(self, queue_id: str, **settings: object) -> None:
        assert await self.store.create(queue(self.tenant, queue_id, self.clock.now(), **settings))
        await self.configs.refresh()

    async def state(self, call_id: str) -> ServiceCallState:
        state = await self.calls.get(self.tenant, call_id)
        assert state is not None
        return state

    async def finish(self, call_id: str, status: int = 200, retryable: bool = False) -> None:
        state = await self.state(call_id)
        assert isinstance(state, Dispatched), state
        result = ExecutionResult(
            response_status=status,
            response_snippet="",
            error="",
            retryable=retryable,
            retry_after=None,
            ended_at=max(self.clock.now(), state.due_at),
        )
        command = (
            RecordExecutionSucceeded(attempt=state.attempt, result=result)
            if status < 300
            else RecordExecutionFailed(attempt=state.attempt, result=result)
        )
        await self.calls.apply(self.tenant, call_id, command, f"e-{next(_events)}", "test")

    async def dispatched(self, ids: list[str]) -> list[str]:
        return [i for i in ids if isinstance(await self.state(i), Dispatched)]


def send_time(state: ServiceCallState) -> datetime:
    assert isinstance(state, Dispatched)
    return state.lease_expires_at - LEASE


@pytest.fixture
def world() -> World:
    return World()


async def test_held_calls_go_at_the_queue_s_rate_in_due_order(world: World) -> None:
    await world.make_queue("q", max_dispatches_per_second=5.0)
    ids = [(await submit(world.h, world.tenant, "q")).spec.service_call_id for _ in range(20)]
    t0 = world.clock.now()
    await world.dispatcher.run_once()
    # Sent from half the hand-off lead ahead (1 s: the hand-off's own way to the executor),
    # up to the lead (2 s) at 5/s: 6 send times, 0.2 s apart.
    start = t0 + DEFAULT_TIMING.handoff_lead / 2
    released = await world.dispatched(ids)
    assert released == ids[:6]
    times = [send_time(await world.state(i)) for i in released]
    assert times == [start + timedelta(seconds=0.2 * n) for n in range(6)]
    held = await world.state(ids[6])
    assert isinstance(held, Scheduled) and held.held_reason == 'waiting for queue "q"\'s rate limit'
    world.clock.advance(timedelta(seconds=1))
    await world.dispatcher.run_once()
    released = await world.dispatched(ids)
    assert released == ids[:11]
    assert send_time(await world.state(ids[10])) == start + timedelta(seconds=2)


async def test_concurrency_caps_the_calls_in_flight(world: World) -> None:
    await world.make_queue("q", max_concurrent_dispatches=2)
    ids = [(await submit(world.h, world.tenant, "q")).spec.service_call_id for _ in range(5)]
    await world.dispatcher.run_once()
    assert await world.dispatched(ids) == ids[:2]
    waiting = await world.state(ids[2])
    assert isinstance(waiting, Scheduled)
    assert waiting.held_reason == 'waiting for queue "q"\'s concurrency limit'
    await world.finish(ids[0])
    await world.dispatcher.run_once()
    assert await world.dispatched(ids) == [ids[1], ids[2]]


async def test_a_paused_queue_holds_and_resume_releases_in_due_order(world: World) -> None:
    await world.make_queue("q", max_dispatches_per_second=100.0)
    paused = await world.queues.pause(world.tenant, "q", None)
    assert not isinstance(paused, Exception) and getattr(paused, "state", None) is QueueState.PAUSED
    ids = [
        (
            await submit(world.h, world.tenant, "q", due=timedelta(milliseconds=-n))
        ).spec.service_call_id
        for n in range(3)
    ]
    await world.dispatcher.run_once()
    for i in ids:
        state = await world.state(i)
        assert isinstance(state, Scheduled) and state.held_reason == 'held by paused queue "q"'
    await world.queues.resume(world.tenant, "q", None)
    await world.dispatcher.run_once()
    # Submitted due "in the past" means now: same due time, so id order decides.
    assert sorted(await world.dispatched(ids)) == sorted(ids)


async def test_one_call_per_key_at_a_time_in_due_order_other_keys_in_parallel(
    world: World,
) -> None:
    a = (await submit(world.h, world.tenant, key="k")).spec.service_call_id
    world.clock.advance(timedelta(milliseconds=1))
    b = (await submit(world.h, world.tenant, key="k")).spec.service_call_id
    other = (await submit(world.h, world.tenant, key="other")).spec.service_call_id
    plain = await submit(world.h, world.tenant)
    assert isinstance(plain, Dispatched)  # no key, default queue: not gated at all
    await world.dispatcher.run_once()
    assert await world.dispatched([a, b, other]) == [a, other]
    waiting = await world.state(b)
    assert isinstance(waiting, Scheduled)
    # Behind a, held when the pass read the queue: not read (its reason already says so).
    assert waiting.held_reason == 'waiting for the calls before it (ordering key "k")'
    await world.dispatcher.run_once()
    # The key's first held call now: read, and a, in flight, is named.
    waiting = await world.state(b)
    assert isinstance(waiting, Scheduled)
    assert waiting.held_reason == f'waiting for call {a} (ordering key "k")'
    await world.finish(a)
    await world.dispatcher.run_once()
    assert await world.dispatched([a, b]) == [b]


async def test_a_retry_keeps_its_key_s_place(world: World) -> None:
    a = (await submit(world.h, world.tenant, key="k")).spec.service_call_id
    world.clock.advance(timedelta(milliseconds=1))
    b = (await submit(world.h, world.tenant, key="k")).spec.service_call_id
    await world.dispatcher.run_once()
    await world.finish(a, status=503, retryable=True)
    retrying = await world.state(a)
    assert isinstance(retrying, Scheduled) and retrying.attempt == 2
    # Its retry comes after b's due time, yet b waits: a is still the key's head.
    world.clock.advance(timedelta(minutes=5))
    await world.dispatcher.run_once()
    assert await world.dispatched([a, b]) == [a]
    await world.finish(a)
    await world.dispatcher.run_once()
    assert await world.dispatched([a, b]) == [b]


async def test_canceling_a_waiting_call_lets_the_next_one_go(world: World) -> None:
    ids = []
    for _ in range(3):
        ids.append((await submit(world.h, world.tenant, key="k")).spec.service_call_id)
        world.clock.advance(timedelta(milliseconds=1))
    await world.dispatcher.run_once()
    assert isinstance(await world.calls.cancel(world.tenant, ids[1], "no", "t"), Canceled)
    await world.finish(ids[0])
    await world.dispatcher.run_once()
    assert await world.dispatched(ids) == [ids[2]]


async def test_block_holds_the_key_until_a_replay_of_the_failure_succeeds(world: World) -> None:
    a = (await submit(world.h, world.tenant, key="k")).spec.service_call_id
    world.clock.advance(timedelta(milliseconds=1))
    b = (await submit(world.h, world.tenant, key="k")).spec.service_call_id
    await world.dispatcher.run_once()
    await world.finish(a, status=404)
    assert isinstance(await world.state(a), Failed)
    await world.dispatcher.run_once()
    blocked = await world.state(b)
    assert isinstance(blocked, Scheduled)
    assert blocked.held_reason == f'waiting for call {a} (ordering key "k")'
    replayed = await world.calls.replay(Replay(world.tenant, a, None, None), "t")
    assert isinstance(replayed, Accepted)
    replay_id = replayed.state.spec.service_call_id
    assert replayed.state.spec.ordering_key == "k"
    await world.dispatcher.run_once()
    # The replay goes first although b is due before it.
    assert await world.dispatched([b, replay_id]) == [replay_id]
    await world.finish(replay_id)
    assert isinstance(await world.state(replay_id), Succeeded)
    await world.dispatcher.run_once()
    assert await world.dispatched([b]) == [b]


async def test_skip_goes_on_after_a_failure(world: World) -> None:
    await world.make_queue("q", ordering_failure_policy=OrderingFailurePolicy.SKIP)
    a = (await submit(world.h, world.tenant, "q", key="k")).spec.service_call_id
    world.clock.advance(timedelta(milliseconds=1))
    b = (await submit(world.h, world.tenant, "q", key="k")).spec.service_call_id
    await world.dispatcher.run_once()
    await world.finish(a, status=404)
    await world.dispatcher.run_once()
    assert await world.dispatched([b]) == [b]


async def test_purge_cancels_pending_calls_and_is_idempotent(world: World) -> None:
    await world.make_queue("q", max_dispatches_per_second=1.0)
    ids = [(await submit(world.h, world.tenant, "q")).spec.service_call_id for _ in range(5)]
    later = await submit(world.h, world.tenant, "q", due=timedelta(hours=1))
    await world.dispatcher.run_once()  # 2 released within the lead at 1/s (from 1 s ahead)
    assert len(await world.dispatched(ids)) == 2
    assert await world.queues.purge(world.tenant, "q", "t") == 4
    assert isinstance(await world.state(later.spec.service_call_id), Canceled)
    assert await world.queues.purge(world.tenant, "q", "t") == 0
    await submit(world.h, world.tenant, "q", due=timedelta(hours=1))
    assert await world.queues.purge(world.tenant, "q", "t") == 1


async def test_submitting_to_a_missing_queue_is_not_found(world: World) -> None:
    base = await submit(world.h, world.tenant, due=timedelta(hours=1))
    spec = base.spec
    outcome = await world.calls.submit(
        Submission(
            tenant_id=world.tenant,
            request=spec.request,
            tags=frozenset(),
            idempotency_key=None,
            retry_policy=spec.retry_policy,
            due=None,
            queue_id="missing",
        ),
        "t",
    )
    assert isinstance(outcome, UnknownQueue)
    assert replace(spec, queue_id=None) == spec  # the default queue is stored as no queue
