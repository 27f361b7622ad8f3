"""Which timers reach the scheduler: the hand-off only; leases and deadlines stay at home."""

from __future__ import annotations

from datetime import timedelta

from mesh.timeconv import from_timestamp
from mesh.topics import Topics
from orchestrator.domain import events as ev
from orchestrator.domain.commands import (
    FireTimer,
    RecordExecutionStarted,
    SubmitServiceCall,
    TimerPurpose,
)
from orchestrator.domain.decide import decide, evolve
from orchestrator.domain.states import ServiceCallState
from orchestrator.mapping import outbox_messages
from servicecall.internal.v1 import events_pb2 as pb
from tests.unit.domain.builders import DUE, SPEC, T0, TIMING, dispatched, events_of

TOPICS = Topics.with_prefix("t.")


def messages(before: ServiceCallState | None, events: tuple[ev.Event, ...]) -> list[pb.Envelope]:
    after = before
    for event in events:
        after = evolve(after, event)
    assert after is not None
    out = outbox_messages(before, after, events, "corr", TOPICS, 256)
    return [pb.Envelope.FromString(m.value) for m in out]


def payloads(envelopes: list[pb.Envelope]) -> list[str | None]:
    return [e.WhichOneof("payload") for e in envelopes]


def test_a_handoff_timer_is_sent_to_the_scheduler() -> None:
    events = events_of(decide(None, SubmitServiceCall(spec=SPEC, due_at=DUE), T0, TIMING))
    assert any(isinstance(e, ev.TimerRequested) for e in events)

    sent = messages(None, events)

    (timer,) = [e for e in sent if e.WhichOneof("payload") == "timer_requested"]
    assert timer.timer_requested.purpose == pb.TIMER_PURPOSE_HANDOFF
    assert from_timestamp(timer.timer_requested.fire_time) == DUE - TIMING.handoff_lead


def test_a_dispatch_lease_timer_is_not_sent() -> None:
    events = events_of(decide(None, SubmitServiceCall(spec=SPEC, due_at=T0), T0, TIMING))
    assert [e.purpose for e in events if isinstance(e, ev.TimerRequested)] == [
        TimerPurpose.DISPATCH_LEASE
    ]

    assert payloads(messages(None, events)) == ["submitted", "execution_requested"]


def test_an_attempt_deadline_timer_is_not_sent() -> None:
    before = dispatched()
    started = RecordExecutionStarted(attempt=1, started_at=DUE)
    events = events_of(decide(before, started, DUE, TIMING))
    assert [e.purpose for e in events if isinstance(e, ev.TimerRequested)] == [
        TimerPurpose.ATTEMPT_DEADLINE
    ]

    # ExecutionStarted is the executor's own announcement; nothing else is left to send.
    assert messages(before, events) == []


def test_a_lease_rearmed_by_an_early_firing_is_not_sent() -> None:
    state = dispatched()
    early = state.lease_expires_at - timedelta(seconds=1)
    fire = FireTimer(purpose=TimerPurpose.DISPATCH_LEASE, attempt=1, fire_at=state.lease_expires_at)
    events = events_of(decide(state, fire, early, TIMING))
    assert [type(e) for e in events] == [ev.TimerRequested]

    assert messages(state, events) == []
