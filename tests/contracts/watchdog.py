"""The watchdog over a ServiceCallStore: the fake (unit) and Postgres (integration) both pass."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from mesh.clock import Uuid7Gen
from mesh.ports import OutgoingMessage
from mesh.secrets import SecretBox
from mesh.topics import Topics
from orchestrator.adapters.store import DEFAULT_HANDOFF_BACKSTOP
from orchestrator.domain.commands import (
    FireTimer,
    RecordExecutionStarted,
    RecordExecutionSucceeded,
    TimerPurpose,
)
from orchestrator.domain.errors import StaleTimer
from orchestrator.domain.model import (
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMING,
    AttemptOutcome,
    ExecutionResult,
    HttpRequest,
)
from orchestrator.domain.states import (
    Dispatched,
    Running,
    Scheduled,
    ServiceCallState,
    Succeeded,
)
from orchestrator.domain.validation import Limits
from orchestrator.entrypoints.watchdog import Watchdog
from orchestrator.mapping import outbox_messages
from orchestrator.ports import Accepted, ServiceCallStore, Submission, Transition
from orchestrator.service_layer.services import Orchestrator
from servicecall.internal.v1 import events_pb2 as pb
from tests.fakes.clock import FakeClock

TOPICS = Topics.with_prefix("watchdog-test.")
TIMING = DEFAULT_TIMING
HANDOFF_BACKSTOP = DEFAULT_HANDOFF_BACKSTOP
ATTEMPT_TIMEOUT = timedelta(seconds=10)
Sent = Callable[[], Awaitable[Sequence[OutgoingMessage]]]


@dataclass
class World:
    """An orchestrator wired as in orchestrator/main.py, over `store`, with a fake clock."""

    store: ServiceCallStore
    sent: Sent  # every outbox message the store holds, in insertion order
    clock: FakeClock = field(default_factory=FakeClock)
    tenant_id: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        self.orchestrator = Orchestrator(
            store=self.store,
            clock=self.clock,
            ids=Uuid7Gen(),
            timing=TIMING,
            limits=Limits(),
            to_messages=partial(outbox_messages, topics=TOPICS, max_snippet_bytes=256),
            secrets=SecretBox({1: bytes(32)}, current=1),
            fingerprint_key=b"test-fingerprint-key",
        )

    def watchdog(self, batch_size: int = 16) -> Watchdog:
        return Watchdog(self.orchestrator, self.store, self.clock, batch_size=batch_size)

    async def submit(self, due_in: timedelta | None = None) -> ServiceCallState:
        request = HttpRequest("POST", "https://example.test/hook", (), b"{}", ATTEMPT_TIMEOUT)
        accepted = await self.orchestrator.submit(
            Submission(
                tenant_id=self.tenant_id,
                request=request,
                tags=frozenset(),
                idempotency_key=None,
                retry_policy=DEFAULT_RETRY_POLICY,
                due=None if due_in is None else self.clock.now() + due_in,
            ),
            correlation_id="test",
        )
        assert isinstance(accepted, Accepted), accepted
        return accepted.state

    async def start(self, call: ServiceCallState) -> Running:
        started = RecordExecutionStarted(attempt=1, started_at=self.clock.now())
        await self._apply(call, started)
        state = await self.state(call)
        assert isinstance(state, Running)
        return state

    async def succeed(self, call: ServiceCallState) -> Succeeded:
        ok = ExecutionResult(200, "{}", "", False, None, self.clock.now())
        await self._apply(call, RecordExecutionSucceeded(attempt=1, result=ok))
        state = await self.state(call)
        assert isinstance(state, Succeeded)
        return state

    async def fire_handoff(
        self, call: ServiceCallState, fire_at: datetime, event_id: str
    ) -> Transition | None:
        """The scheduler's DueTimeReached for the call's hand-off, as the consumer applies it."""
        spec = call.spec
        fired = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=fire_at)
        return await self.orchestrator.apply(
            spec.tenant_id, spec.service_call_id, fired, event_id, "test"
        )

    async def _apply(
        self, call: ServiceCallState, command: RecordExecutionStarted | RecordExecutionSucceeded
    ) -> None:
        spec = call.spec
        event_id = f"{spec.service_call_id}/{type(command).__name__}"
        transition = await self.orchestrator.apply(
            spec.tenant_id, spec.service_call_id, command, event_id, "test"
        )
        assert transition is not None and transition.rejection is None, transition

    async def state(self, call: ServiceCallState) -> ServiceCallState:
        state = await self.store.get(call.spec.tenant_id, call.spec.service_call_id)
        assert state is not None
        return state

    async def execution_requests(self, call: ServiceCallState) -> list[pb.ExecutionRequested]:
        return [
            e.execution_requested
            for e in await self._envelopes(TOPICS.execution_requests)
            if e.service_call_id == call.spec.service_call_id
        ]

    async def timer_requests(self) -> list[pb.TimerRequested]:
        return [e.timer_requested for e in await self._envelopes(TOPICS.timer_requests)]

    async def _envelopes(self, topic: str) -> list[pb.Envelope]:
        return [pb.Envelope.FromString(m.value) for m in await self.sent() if m.topic == topic]


class WatchdogContract:
    """Subclasses provide a `world` fixture (a World over their store, in a fresh state)."""

    async def test_a_lost_hand_off_is_dispatched_again_once_its_lease_ran_out(
        self, world: World
    ) -> None:
        call = await world.submit()
        assert isinstance(call, Dispatched)
        watchdog = world.watchdog()
        world.clock.current = call.lease_expires_at - timedelta(microseconds=1)
        assert await watchdog.sweep() is False
        assert await world.state(call) == call

        world.clock.current = call.lease_expires_at
        await watchdog.sweep()

        again = await world.state(call)
        assert isinstance(again, Dispatched)
        assert again.attempt == 1
        assert again.lease_expires_at == call.lease_expires_at + TIMING.dispatch_lease
        requests = await world.execution_requests(call)
        assert [r.attempt for r in requests] == [1, 1]
        assert {r.idempotency_key for r in requests} == {call.spec.service_call_id}
        assert requests[0].not_before == requests[1].not_before
        # The lease timers of both hand-offs were kept here, never sent to the scheduler.
        assert await world.timer_requests() == []

    async def test_a_running_call_past_its_deadline_is_retried(self, world: World) -> None:
        running = await world.start(await world.submit())
        assert running.deadline == running.started_at + ATTEMPT_TIMEOUT + TIMING.attempt_grace
        world.clock.current = running.deadline
        await world.watchdog().sweep()

        retried = await world.state(running)
        assert isinstance(retried, Scheduled | Dispatched)
        assert retried.attempt == 2
        (timed_out,) = retried.attempts
        assert timed_out.outcome is AttemptOutcome.TIMED_OUT
        assert timed_out.error == "attempt_deadline_exceeded"
        if isinstance(retried, Dispatched):  # the backoff fell inside the hand-off lead
            assert [r.attempt for r in await world.execution_requests(running)] == [1, 2]
        else:
            assert [t.purpose for t in await world.timer_requests()] == [pb.TIMER_PURPOSE_HANDOFF]

    async def test_a_finished_call_is_never_touched(self, world: World) -> None:
        call = await world.submit()
        await world.start(call)
        done = await world.succeed(call)
        before = list(await world.sent())
        world.clock.advance(timedelta(days=3))
        assert await world.watchdog().sweep() is False
        assert await world.state(call) == done
        assert list(await world.sent()) == before

    async def test_a_scheduled_call_is_left_to_the_scheduler_until_the_backstop(
        self, world: World
    ) -> None:
        call = await world.submit(due_in=timedelta(hours=1))
        assert isinstance(call, Scheduled) and call.handoff_at is not None
        world.clock.current = call.handoff_at + HANDOFF_BACKSTOP - timedelta(microseconds=1)
        assert await world.watchdog().sweep() is False
        assert await world.state(call) == call
        assert await world.execution_requests(call) == []

    async def test_a_hand_off_whose_timer_never_fired_is_made_after_the_backstop(
        self, world: World
    ) -> None:
        # Regression (issue #12, 10): the timer request or its DueTimeReached was lost; the
        # call used to stay Scheduled for ever.
        call = await world.submit(due_in=timedelta(hours=1))
        assert isinstance(call, Scheduled) and call.handoff_at is not None
        world.clock.current = call.handoff_at + HANDOFF_BACKSTOP
        await world.watchdog().sweep()

        handed_off = await world.state(call)
        assert isinstance(handed_off, Dispatched) and handed_off.attempt == 1
        assert handed_off.due_at == call.due_at
        assert [r.attempt for r in await world.execution_requests(call)] == [1]

        # The scheduler's fact, late: refused as stale, nothing is dispatched twice.
        late = await world.fire_handoff(call, call.handoff_at, "scheduler-fact")
        assert late is not None and isinstance(late.rejection, StaleTimer), late
        assert await world.state(call) == handed_off
        assert [r.attempt for r in await world.execution_requests(call)] == [1]

    async def test_a_hand_off_the_scheduler_made_is_not_made_again(self, world: World) -> None:
        call = await world.submit(due_in=timedelta(hours=1))
        assert isinstance(call, Scheduled) and call.handoff_at is not None
        world.clock.current = call.handoff_at
        fired = await world.fire_handoff(call, call.handoff_at, "scheduler-fact")
        assert fired is not None and fired.rejection is None, fired
        handed_off = await world.state(call)
        assert isinstance(handed_off, Dispatched)

        world.clock.current = call.handoff_at + HANDOFF_BACKSTOP
        assert handed_off.lease_expires_at > world.clock.current  # only the backstop is due
        await world.watchdog().sweep()
        assert await world.state(call) == handed_off
        assert [r.attempt for r in await world.execution_requests(call)] == [1]

    async def test_replicas_sweeping_at_once_fire_a_timer_once(self, world: World) -> None:
        calls = [await world.submit() for _ in range(3)]
        world.clock.advance(TIMING.dispatch_lease)
        await asyncio.gather(*(world.watchdog().sweep() for _ in range(3)))
        for call in calls:
            assert [r.attempt for r in await world.execution_requests(call)] == [1, 1]
            state = await world.state(call)
            # Dispatched again exactly once: ExecutionRequested + its lease TimerRequested.
            assert state.version == call.version + 2

    async def test_a_full_batch_is_followed_at_once_by_the_next(self, world: World) -> None:
        calls = [await world.submit() for _ in range(3)]
        world.clock.advance(TIMING.dispatch_lease)
        watchdog = world.watchdog(batch_size=2)
        assert await watchdog.sweep() is True
        assert await watchdog.sweep() is False
        for call in calls:
            assert len(await world.execution_requests(call)) == 2

    async def test_a_call_dispatched_again_is_watched_again(self, world: World) -> None:
        call = await world.submit()
        watchdog = world.watchdog()
        for expected in (2, 3):
            world.clock.advance(TIMING.dispatch_lease)
            await watchdog.sweep()
            assert len(await world.execution_requests(call)) == expected
        still = await world.state(call)
        assert isinstance(still, Dispatched) and still.attempt == 1
