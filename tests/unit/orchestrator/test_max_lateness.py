"""max_lateness in the core: an attempt the mesh comes to send more than max_lateness after
its own due time ends the call FAILED unsent, with a reason saying so; on time it is sent, and
the executor is told the deadline (ExecutionRequested.send_deadline)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from mesh.timeconv import from_timestamp
from mesh.topics import Topics
from orchestrator.domain import events as ev
from orchestrator.domain.commands import (
    FireTimer,
    RecordExecutionFailed,
    SubmitServiceCall,
    TimerPurpose,
)
from orchestrator.domain.decide import decide, evolve, span, too_late_reason
from orchestrator.domain.model import ServiceCallSpec
from orchestrator.domain.states import Dispatched, Failed, Scheduled, ServiceCallState
from orchestrator.mapping import outbox_messages
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import service_call_pb2 as api
from tests.unit.domain.builders import (
    DUE,
    SPEC,
    T0,
    TIMING,
    apply,
    events_of,
    execution_result,
    retry_policy,
    step,
)

MINUTE = timedelta(minutes=1)
LATE_OK = replace(SPEC, max_lateness=MINUTE)
TOPICS = Topics.with_prefix("t.")


def _scheduled(spec: ServiceCallSpec = LATE_OK) -> Scheduled:
    state = step(None, SubmitServiceCall(spec=spec, due_at=DUE), T0)
    assert isinstance(state, Scheduled) and state.handoff_at is not None
    return state


def _handoff(state: Scheduled) -> FireTimer:
    assert state.handoff_at is not None
    return FireTimer(purpose=TimerPurpose.HANDOFF, attempt=state.attempt, fire_at=state.handoff_at)


def _envelopes(before: ServiceCallState | None, events: tuple[ev.Event, ...]) -> list[pb.Envelope]:
    after = apply(before, events)
    out = outbox_messages(before, after, events, "corr", TOPICS, 256)
    return [pb.Envelope.FromString(m.value) for m in out]


def test_a_handoff_later_than_max_lateness_fails_the_call_unsent() -> None:
    before = _scheduled()
    now = DUE + timedelta(minutes=4, seconds=12)

    events = events_of(decide(before, _handoff(before), now, TIMING))

    reason = "not sent: 4m12s past its due time 2030-01-01T13:00:00.000Z, over max_lateness 1m"
    assert events == (ev.TooLate(at=now, attempt=1, reason=reason),)
    after = apply(before, events)
    assert isinstance(after, Failed)
    assert after.reason == reason
    assert after.attempts == ()  # no attempt was made
    assert after.completed_at == now
    # The terminal summary is emitted (observers and completion callbacks depend on it), and
    # nothing goes to the executor.
    sent = _envelopes(before, events)
    assert [e.WhichOneof("payload") for e in sent] == ["completed"]
    completed = sent[0].completed
    assert completed.state == api.ServiceCall.FAILED
    assert completed.reason == reason
    assert completed.attempt_count == 0


def test_a_handoff_within_max_lateness_dispatches_with_the_send_deadline() -> None:
    before = _scheduled()
    now = DUE + MINUTE  # exactly at the bound: still on time

    events = events_of(decide(before, _handoff(before), now, TIMING))

    assert isinstance(apply(before, events), Dispatched)
    [request] = [
        e.execution_requested
        for e in _envelopes(before, events)
        if e.WhichOneof("payload") == "execution_requested"
    ]
    assert from_timestamp(request.not_before) == DUE
    assert from_timestamp(request.send_deadline) == DUE + MINUTE


def test_without_max_lateness_a_late_call_is_sent_and_has_no_send_deadline() -> None:
    before = _scheduled(SPEC)
    events = events_of(decide(before, _handoff(before), DUE + timedelta(days=3), TIMING))

    assert isinstance(apply(before, events), Dispatched)
    [request] = [
        e.execution_requested
        for e in _envelopes(before, events)
        if e.WhichOneof("payload") == "execution_requested"
    ]
    assert not request.HasField("send_deadline")


def test_a_retry_is_measured_against_its_own_due_time() -> None:
    spec = replace(
        LATE_OK,
        retry_policy=retry_policy(min_backoff=timedelta(minutes=10), jitter=0.0, max_attempts=3),
    )
    first = step(_scheduled(spec), _handoff(_scheduled(spec)), DUE - timedelta(seconds=2))
    busy = execution_result(ended_at=DUE + timedelta(seconds=1), status=503, retryable=True)
    retrying = step(
        first, RecordExecutionFailed(attempt=1, result=busy), DUE + timedelta(seconds=1)
    )
    assert isinstance(retrying, Scheduled) and retrying.attempt == 2
    retry_due = retrying.due_at
    # Ten minutes after the FIRST due time, far past max_lateness from it, but on time for
    # the retry's own due time: sent.
    on_time = step(retrying, _handoff(retrying), retry_due + timedelta(seconds=30))
    assert isinstance(on_time, Dispatched)
    assert retry_due - DUE > 5 * MINUTE
    # Past max_lateness from the retry's due time: failed unsent, attempt 1 kept as it was.
    late = step(retrying, _handoff(retrying), retry_due + 2 * MINUTE)
    assert isinstance(late, Failed)
    assert late.reason == too_late_reason(retry_due, MINUTE, retry_due + 2 * MINUTE)
    assert [a.number for a in late.attempts] == [1]


def test_a_redispatch_after_a_lost_handoff_that_comes_too_late_fails() -> None:
    spec = replace(SPEC, max_lateness=timedelta(seconds=10))
    state = _scheduled(spec)
    dispatched = step(state, _handoff(state), DUE - timedelta(seconds=2))
    assert isinstance(dispatched, Dispatched)
    # The executor never started it; the lease (30 s past the due time) runs out, later than
    # the 10 s the call allows: the hand-off is not sent again.
    lease = FireTimer(
        purpose=TimerPurpose.DISPATCH_LEASE, attempt=1, fire_at=dispatched.lease_expires_at
    )
    events = events_of(decide(dispatched, lease, dispatched.lease_expires_at, TIMING))

    assert [type(e) for e in events] == [ev.TooLate]
    after = apply(dispatched, events)
    assert isinstance(after, Failed)
    assert after.attempts == ()
    assert "over max_lateness 10s" in after.reason


def test_a_redispatch_within_max_lateness_is_sent_again() -> None:
    state = _scheduled()  # 1 minute allowed, the lease is 30 s
    dispatched = step(state, _handoff(state), DUE - timedelta(seconds=2))
    assert isinstance(dispatched, Dispatched)
    lease = FireTimer(
        purpose=TimerPurpose.DISPATCH_LEASE, attempt=1, fire_at=dispatched.lease_expires_at
    )
    again = step(dispatched, lease, dispatched.lease_expires_at)
    assert isinstance(again, Dispatched) and again.attempt == 1


def test_the_executor_s_refusal_to_send_late_fails_the_call_with_its_error() -> None:
    state = _scheduled(replace(LATE_OK, retry_policy=retry_policy(max_attempts=5)))
    dispatched = step(state, _handoff(state), DUE - timedelta(seconds=2))
    refused = execution_result(
        ended_at=DUE + 2 * MINUTE, status=None, error="max_lateness_exceeded", retryable=False
    )
    after = step(dispatched, RecordExecutionFailed(attempt=1, result=refused), DUE + 2 * MINUTE)

    assert isinstance(after, Failed)  # attempts were left, but this is not retryable
    [attempt] = after.attempts
    assert attempt.error == "max_lateness_exceeded"
    assert attempt.response_status is None
    assert "max_lateness_exceeded" in after.reason and "not retryable" in after.reason


def test_the_too_late_event_applies_only_to_the_attempt_it_names() -> None:
    with pytest.raises(ValueError):
        evolve(_scheduled(), ev.TooLate(at=DUE, attempt=2, reason="x"))


def test_spans_read_as_people_write_them() -> None:
    assert span(timedelta(milliseconds=850)) == "850ms"
    assert span(timedelta(seconds=1)) == "1s"
    assert span(timedelta(minutes=4, seconds=12, microseconds=999)) == "4m12s"
    assert span(timedelta(days=1, hours=2)) == "1d2h"
