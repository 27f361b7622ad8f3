"""Named rules of the ServiceCall core; each test fails if its rule is removed."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from orchestrator.domain import events as ev
from orchestrator.domain.commands import (
    CancelServiceCall,
    CommandKind,
    FireTimer,
    RecordExecutionFailed,
    RecordExecutionStarted,
    RecordExecutionSucceeded,
    RescheduleServiceCall,
    RunServiceCallNow,
    SubmitServiceCall,
    TimerPurpose,
)
from orchestrator.domain.decide import decide, evolve, replay
from orchestrator.domain.errors import (
    AlreadySubmitted,
    AlreadyTerminal,
    Duplicate,
    ErrorKind,
    IdempotencyConflict,
    IllegalTransition,
    NotCancelable,
    NotReschedulable,
    StaleEvent,
    StaleTimer,
    StartedTooEarly,
    VersionMismatch,
)
from orchestrator.domain.model import AttemptOutcome
from orchestrator.domain.states import (
    Canceled,
    Dispatched,
    Failed,
    Scheduled,
    Status,
    Succeeded,
    status_of,
)

from .builders import (
    DUE,
    SECOND,
    SPEC,
    T0,
    TIMING,
    apply,
    dispatched,
    events_of,
    execution_result,
    http_request,
    retry_policy,
    running,
    scheduled,
    service_call_spec,
    state_in,
    step,
)

LEAD = TIMING.handoff_lead
LEASE = TIMING.dispatch_lease


def test_submit_for_later_arms_the_handoff_timer() -> None:
    events = events_of(decide(None, SubmitServiceCall(spec=SPEC, due_at=DUE), T0, TIMING))

    assert events == (
        ev.Submitted(at=T0, spec=SPEC, due_at=DUE),
        ev.TimerRequested(at=T0, purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=DUE - LEAD),
    )
    state = apply(None, events)
    assert isinstance(state, Scheduled)
    assert (state.version, state.attempt, state.handoff_at) == (2, 1, DUE - LEAD)


@pytest.mark.parametrize(
    "due_at",
    [T0 - timedelta(days=1), T0, T0 + LEAD],
    ids=["past", "now", "within-lead"],
)
def test_submit_already_in_the_handoff_window_dispatches_at_once(due_at: datetime) -> None:
    events = events_of(decide(None, SubmitServiceCall(spec=SPEC, due_at=due_at), T0, TIMING))

    lease_expires_at = max(T0, due_at) + LEASE
    assert events[1:] == (
        ev.ExecutionRequested(
            at=T0, attempt=1, not_before=due_at, lease_expires_at=lease_expires_at
        ),
        ev.TimerRequested(
            at=T0, purpose=TimerPurpose.DISPATCH_LEASE, attempt=1, fire_at=lease_expires_at
        ),
    )
    assert isinstance(apply(None, events), Dispatched)


def test_handoff_dispatches_with_not_before_due_at() -> None:
    state = scheduled()
    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=DUE - LEAD)

    events = events_of(decide(state, fire, DUE - LEAD, TIMING))

    assert events[0] == ev.ExecutionRequested(
        at=DUE - LEAD, attempt=1, not_before=DUE, lease_expires_at=DUE + LEASE
    )


def test_handoff_timer_fired_early_within_the_allowance_dispatches_for_due_at() -> None:
    # Crowded due times: the scheduler fires hand-offs early; the send still waits for due_at.
    state = scheduled()
    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=DUE - LEAD)
    early = DUE - LEAD - TIMING.handoff_early_max

    events = events_of(decide(state, fire, early, TIMING))

    assert events[0] == ev.ExecutionRequested(
        at=early, attempt=1, not_before=DUE, lease_expires_at=DUE + LEASE
    )
    assert isinstance(apply(state, events), Dispatched)


def test_handoff_timer_never_fires_earlier_than_the_allowance() -> None:
    state = scheduled()
    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=DUE - LEAD)
    early = DUE - LEAD - TIMING.handoff_early_max - timedelta(milliseconds=5)

    events = events_of(decide(state, fire, early, TIMING))

    # Re-armed, not dropped: dropping it would leave the call Scheduled forever.
    assert events == (
        ev.TimerRequested(at=early, purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=DUE - LEAD),
    )
    assert isinstance(apply(state, events), Scheduled)


def test_stale_handoff_timer_after_reschedule_is_ignored() -> None:
    old_fire_at = DUE - LEAD
    later = DUE + timedelta(hours=3)
    state = step(scheduled(), RescheduleServiceCall(due_at=later), T0)

    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=old_fire_at)
    decision = decide(state, fire, old_fire_at, TIMING)

    assert decision == StaleTimer(TimerPurpose.HANDOFF, 1, old_fire_at)
    assert decision.kind is ErrorKind.STALE


def test_handoff_timer_armed_before_a_lead_change_still_fires() -> None:
    state = scheduled()
    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=DUE - LEAD)
    new_timing = replace(TIMING, handoff_lead=timedelta(seconds=1))

    decision = decide(state, fire, DUE - LEAD, new_timing)

    assert isinstance(apply(state, events_of(decision)), Dispatched)


def test_lease_expiry_redispatches_the_same_attempt() -> None:
    state = dispatched()
    fire = FireTimer(purpose=TimerPurpose.DISPATCH_LEASE, attempt=1, fire_at=DUE + LEASE)
    now = DUE + LEASE

    events = events_of(decide(state, fire, now, TIMING))

    assert events == (
        ev.ExecutionRequested(at=now, attempt=1, not_before=DUE, lease_expires_at=now + LEASE),
        ev.TimerRequested(
            at=now, purpose=TimerPurpose.DISPATCH_LEASE, attempt=1, fire_at=now + LEASE
        ),
    )
    after = apply(state, events)
    assert isinstance(after, Dispatched)
    assert (after.attempt, after.due_at, after.attempts) == (1, DUE, ())


def test_lease_timer_fired_early_is_rearmed() -> None:
    state = dispatched()
    fire = FireTimer(purpose=TimerPurpose.DISPATCH_LEASE, attempt=1, fire_at=DUE + LEASE)

    events = events_of(decide(state, fire, DUE, TIMING))

    assert [type(event) for event in events] == [ev.TimerRequested]


def test_lease_timer_after_start_is_stale() -> None:
    state = running()
    fire = FireTimer(purpose=TimerPurpose.DISPATCH_LEASE, attempt=1, fire_at=DUE + LEASE)

    assert isinstance(decide(state, fire, DUE + LEASE, TIMING), StaleTimer)


def test_started_enters_running_and_arms_the_watchdog() -> None:
    state = dispatched()
    started_at = DUE + timedelta(milliseconds=3)

    events = events_of(
        decide(state, RecordExecutionStarted(attempt=1, started_at=started_at), DUE, TIMING)
    )

    deadline = started_at + SPEC.request.attempt_timeout + TIMING.attempt_grace
    assert events == (
        ev.ExecutionStarted(at=DUE, attempt=1, started_at=started_at, deadline=deadline),
        ev.TimerRequested(
            at=DUE, purpose=TimerPurpose.ATTEMPT_DEADLINE, attempt=1, fire_at=deadline
        ),
    )


def test_duplicate_execution_started_changes_nothing() -> None:
    state = running()
    again = RecordExecutionStarted(attempt=1, started_at=DUE + SECOND)

    decision = decide(state, again, DUE + SECOND, TIMING)

    assert decision == Duplicate(CommandKind.EXECUTION_STARTED, 1)
    assert decision.kind is ErrorKind.DUPLICATE


def test_duplicate_result_changes_nothing() -> None:
    ok = RecordExecutionSucceeded(attempt=1, result=execution_result(ended_at=DUE + SECOND))
    state = step(running(), ok, DUE + SECOND)

    assert isinstance(decide(state, ok, DUE + SECOND, TIMING), AlreadyTerminal)


def test_duplicate_failure_after_retry_is_stale() -> None:
    busy = execution_result(ended_at=DUE + SECOND, status=503, retryable=True)
    failed = RecordExecutionFailed(attempt=1, result=busy)
    state = step(running(), failed, DUE + SECOND)

    decision = decide(state, failed, DUE + SECOND, TIMING)

    assert isinstance(decision, StaleEvent)
    assert (decision.attempt, decision.current_attempt) == (1, 2)


def test_started_before_due_at_is_refused() -> None:
    early = RecordExecutionStarted(attempt=1, started_at=DUE - timedelta(milliseconds=1))

    assert isinstance(decide(dispatched(), early, DUE, TIMING), StartedTooEarly)


def test_result_without_started_is_accepted_from_dispatched() -> None:
    ok = execution_result(ended_at=DUE + SECOND)

    state = step(dispatched(), RecordExecutionSucceeded(attempt=1, result=ok), DUE + SECOND)

    assert isinstance(state, Succeeded)
    assert state.attempts[0].started_at == ok.ended_at


def test_a_result_carrying_its_start_records_that_start() -> None:
    # Executors send Started only for slow attempts; a quick one's result says when it began.
    ok = execution_result(ended_at=DUE + 2 * SECOND, started_at=DUE + SECOND)

    state = step(dispatched(), RecordExecutionSucceeded(attempt=1, result=ok), DUE + 2 * SECOND)

    assert isinstance(state, Succeeded)
    assert (state.attempts[0].started_at, state.attempts[0].ended_at) == (
        DUE + SECOND,
        DUE + 2 * SECOND,
    )


def test_a_result_whose_start_is_before_due_at_is_refused() -> None:
    early = execution_result(ended_at=DUE + SECOND, started_at=DUE - SECOND)

    decision = decide(dispatched(), RecordExecutionSucceeded(attempt=1, result=early), DUE, TIMING)

    assert isinstance(decision, StartedTooEarly)


def test_result_without_started_before_due_at_is_refused() -> None:
    ok = execution_result(ended_at=DUE - SECOND)

    decision = decide(dispatched(), RecordExecutionSucceeded(attempt=1, result=ok), DUE, TIMING)

    assert isinstance(decision, StartedTooEarly)


def test_report_for_an_attempt_not_handed_off_is_illegal() -> None:
    started = RecordExecutionStarted(attempt=1, started_at=DUE)

    assert isinstance(decide(scheduled(), started, DUE, TIMING), IllegalTransition)
    assert isinstance(
        decide(dispatched(), replace(started, attempt=2), DUE, TIMING), IllegalTransition
    )


def test_success_records_the_attempt() -> None:
    ok = execution_result(ended_at=DUE + SECOND, status=201)

    state = step(running(), RecordExecutionSucceeded(attempt=1, result=ok), DUE + SECOND)

    assert isinstance(state, Succeeded)
    [attempt] = state.attempts
    assert (attempt.number, attempt.outcome, attempt.response_status) == (
        1,
        AttemptOutcome.SUCCEEDED,
        201,
    )
    assert (attempt.started_at, attempt.ended_at) == (DUE, DUE + SECOND)


def test_retryable_failure_schedules_the_next_attempt_with_its_handoff() -> None:
    busy = execution_result(ended_at=DUE + SECOND, status=503)
    now = DUE + SECOND

    events = events_of(
        decide(running(), RecordExecutionFailed(attempt=1, result=busy), now, TIMING)
    )

    failed = events[0]
    assert isinstance(failed, ev.ExecutionFailed)
    assert failed.retry_at is not None
    assert failed.retry_at > now
    state = apply(running(), events)
    if failed.retry_at - LEAD > now:
        assert events[1:] == (
            ev.TimerRequested(
                at=now, purpose=TimerPurpose.HANDOFF, attempt=2, fire_at=failed.retry_at - LEAD
            ),
        )
        assert isinstance(state, Scheduled)
    else:
        assert isinstance(state, Dispatched)
    assert state.attempt == 2
    assert state.due_at == failed.retry_at
    assert [attempt.outcome for attempt in state.attempts] == [AttemptOutcome.FAILED]


def test_retry_due_within_the_lead_is_dispatched_at_once() -> None:
    fast = service_call_spec(policy=retry_policy(min_backoff=SECOND, jitter=0.0))
    busy = execution_result(ended_at=DUE + SECOND, status=503)

    state = step(running(fast), RecordExecutionFailed(attempt=1, result=busy), DUE + SECOND)

    assert isinstance(state, Dispatched)
    assert (state.attempt, state.due_at) == (2, DUE + 2 * SECOND)


def test_failure_with_no_attempts_left_fails_the_call() -> None:
    once = service_call_spec(policy=retry_policy(max_attempts=1))
    busy = execution_result(ended_at=DUE + SECOND, status=503)

    state = step(running(once), RecordExecutionFailed(attempt=1, result=busy), DUE + SECOND)

    assert isinstance(state, Failed)
    assert "no attempts left" in state.reason


def test_non_retryable_failure_fails_the_call() -> None:
    gone = execution_result(ended_at=DUE + SECOND, status=404)

    state = step(running(), RecordExecutionFailed(attempt=1, result=gone), DUE + SECOND)

    assert isinstance(state, Failed)
    assert len(state.attempts) == 1


def test_watchdog_times_out_a_silent_attempt_and_retries() -> None:
    state = running()
    fire = FireTimer(purpose=TimerPurpose.ATTEMPT_DEADLINE, attempt=1, fire_at=state.deadline)

    events = events_of(decide(state, fire, state.deadline, TIMING))

    failed = events[0]
    assert isinstance(failed, ev.ExecutionFailed)
    assert failed.outcome is AttemptOutcome.TIMED_OUT
    assert failed.retry_at is not None
    after = apply(state, events)
    assert status_of(after) in {Status.SCHEDULED, Status.DISPATCHED}
    assert after.attempts[0].outcome is AttemptOutcome.TIMED_OUT


def test_watchdog_never_fires_before_the_deadline() -> None:
    state = running()
    fire = FireTimer(purpose=TimerPurpose.ATTEMPT_DEADLINE, attempt=1, fire_at=state.deadline)

    events = events_of(decide(state, fire, state.deadline - SECOND, TIMING))

    assert [type(event) for event in events] == [ev.TimerRequested]


def test_late_result_after_watchdog_retry_is_stale() -> None:
    state = running()
    fire = FireTimer(purpose=TimerPurpose.ATTEMPT_DEADLINE, attempt=1, fire_at=state.deadline)
    state_after = step(state, fire, state.deadline)
    ok = RecordExecutionSucceeded(attempt=1, result=execution_result(ended_at=state.deadline))

    assert isinstance(decide(state_after, ok, state.deadline, TIMING), StaleEvent)


def test_cancel_before_handoff_cancels() -> None:
    state = step(scheduled(), CancelServiceCall(reason="obsolete"), T0)

    assert isinstance(state, Canceled)
    assert (state.canceled_at, state.reason) == (T0, "obsolete")


def test_illegal_transition_cancel_after_handoff_is_refused() -> None:
    for state in (dispatched(), running()):
        decision = decide(state, CancelServiceCall(reason="too late"), DUE, TIMING)

        assert decision == NotCancelable(status_of(state))
        assert decision.kind is ErrorKind.PRECONDITION


def test_reschedule_after_handoff_is_refused() -> None:
    for state in (dispatched(), running()):
        later = RescheduleServiceCall(due_at=DUE + timedelta(hours=1))

        assert isinstance(decide(state, later, DUE, TIMING), NotReschedulable)
        assert isinstance(decide(state, RunServiceCallNow(), DUE, TIMING), NotReschedulable)


def test_reschedule_moves_due_at_and_rearms_the_handoff() -> None:
    later = DUE + timedelta(hours=1)

    state = step(scheduled(), RescheduleServiceCall(due_at=later), T0)

    assert isinstance(state, Scheduled)
    assert (state.due_at, state.handoff_at, state.attempt) == (later, later - LEAD, 1)


def test_reschedule_with_a_stale_expected_version_is_refused() -> None:
    state = scheduled()
    command = RescheduleServiceCall(due_at=DUE, expected_version=state.version - 1)

    decision = decide(state, command, T0, TIMING)

    assert decision == VersionMismatch(state.version - 1, state.version)
    assert decision.kind is ErrorKind.CONFLICT
    ok = replace(command, expected_version=state.version)
    assert isinstance(decide(state, ok, T0, TIMING), tuple)


def test_run_now_dispatches_immediately_not_before_now() -> None:
    now = T0 + timedelta(minutes=1)

    events = events_of(decide(scheduled(), RunServiceCallNow(), now, TIMING))

    assert events[0] == ev.Rescheduled(at=now, due_at=now)
    assert events[1] == ev.ExecutionRequested(
        at=now, attempt=1, not_before=now, lease_expires_at=now + LEASE
    )


def test_same_key_same_request_returns_existing() -> None:
    state = scheduled()
    again = service_call_spec(created_at=T0 + timedelta(minutes=1))

    decision = decide(state, SubmitServiceCall(spec=again, due_at=DUE), T0, TIMING)

    assert decision == AlreadySubmitted(state)
    assert decision.kind is ErrorKind.DUPLICATE


def test_same_key_same_request_returns_existing_even_when_terminal() -> None:
    state = state_in(Status.SUCCEEDED)
    assert state is not None

    decision = decide(state, SubmitServiceCall(spec=SPEC, due_at=DUE), DUE, TIMING)

    assert decision == AlreadySubmitted(state)


def test_same_key_different_request_is_a_conflict() -> None:
    state = scheduled()
    other = service_call_spec(request=http_request(url="https://api.example.com/hooks/2"))
    assert other.service_call_id == state.spec.service_call_id

    decision = decide(state, SubmitServiceCall(spec=other, due_at=DUE), T0, TIMING)

    assert decision == IdempotencyConflict(state.spec.service_call_id, "order-42")
    assert decision.kind is ErrorKind.CONFLICT


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELED])
def test_terminal_states_absorb(status: Status) -> None:
    state = state_in(status)
    for command in (
        CancelServiceCall(reason="x"),
        RunServiceCallNow(),
        RecordExecutionStarted(attempt=1, started_at=DUE),
        FireTimer(purpose=TimerPurpose.ATTEMPT_DEADLINE, attempt=1, fire_at=DUE),
    ):
        assert decide(state, command, DUE + timedelta(days=1), TIMING) == AlreadyTerminal(status)


def test_evolve_refuses_an_event_decide_never_produces() -> None:
    with pytest.raises(ValueError, match="cannot apply"):
        evolve(scheduled(), ev.ExecutionStarted(at=DUE, attempt=1, started_at=DUE, deadline=DUE))
    with pytest.raises(ValueError, match="cannot apply"):
        evolve(None, ev.Canceled(at=T0, reason="x"))


def test_replay_rebuilds_the_state_from_its_log() -> None:
    log = [
        *events_of(decide(None, SubmitServiceCall(spec=SPEC, due_at=DUE), T0, TIMING)),
    ]
    state = replay(log)
    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=DUE - LEAD)
    log += events_of(decide(state, fire, DUE - LEAD, TIMING))

    rebuilt = replay(log)

    assert isinstance(rebuilt, Dispatched)
    assert rebuilt.version == len(log)
    with pytest.raises(ValueError, match="no events"):
        replay([])


def test_max_retry_duration_counts_from_the_first_attempt_not_from_submission() -> None:
    # Submitted an hour before it is due, with a ten-minute retry window.
    windowed = service_call_spec(policy=retry_policy(max_retry_duration=timedelta(minutes=10)))
    busy = execution_result(ended_at=DUE + SECOND, status=503)

    state = step(running(windowed), RecordExecutionFailed(attempt=1, result=busy), DUE + SECOND)

    assert status_of(state) in {Status.SCHEDULED, Status.DISPATCHED}


def test_a_retry_beyond_max_retry_duration_fails_the_call() -> None:
    policy = retry_policy(
        max_retry_duration=timedelta(minutes=10), min_backoff=timedelta(minutes=20), jitter=0.0
    )
    busy = execution_result(ended_at=DUE + SECOND, status=503)

    state = step(
        running(service_call_spec(policy=policy)),
        RecordExecutionFailed(attempt=1, result=busy),
        DUE + SECOND,
    )

    assert isinstance(state, Failed)
    assert "max_retry_duration" in state.reason
