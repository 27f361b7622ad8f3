"""The ServiceCall core: decide(state, command) -> events | error, evolve(state, event) -> state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import assert_never

from orchestrator.domain import events as ev
from orchestrator.domain.commands import (
    AbandonServiceCall,
    CancelServiceCall,
    Command,
    CommandKind,
    FireTimer,
    HoldServiceCall,
    RecordExecutionFailed,
    RecordExecutionStarted,
    RecordExecutionSucceeded,
    ReleaseServiceCall,
    RescheduleServiceCall,
    RunServiceCallNow,
    SubmitServiceCall,
    TimerPurpose,
    kind_of,
)
from orchestrator.domain.errors import (
    AlreadySubmitted,
    AlreadyTerminal,
    DomainError,
    Duplicate,
    IdempotencyConflict,
    IllegalTransition,
    NotCancelable,
    NotHeld,
    NotReschedulable,
    ServiceCallNotFound,
    StaleEvent,
    StaleTimer,
    StartedTooEarly,
    VersionMismatch,
)
from orchestrator.domain.model import (
    Attempt,
    AttemptOutcome,
    ExecutionResult,
    Timing,
)
from orchestrator.domain.retry import decide_retry
from orchestrator.domain.states import (
    TERMINAL,
    ActiveState,
    Canceled,
    Dispatched,
    Failed,
    Running,
    Scheduled,
    ServiceCallState,
    Status,
    Succeeded,
    status_of,
)

Decision = tuple[ev.Event, ...] | DomainError


# The transition table, as documentation and as the test table. It gives the outcome of the
# well-formed command for that state: the current attempt, the timer that is armed, at or
# after its fire time, the same request on resubmission. Older attempts give StaleEvent,
# disarmed timers StaleTimer, a different request IdempotencyConflict, and a timer fired
# early is re-armed.
@dataclass(frozen=True, slots=True)
class Moves:
    to: frozenset[Status]


@dataclass(frozen=True, slots=True)
class Refused:
    error: type[DomainError]


_RETRY = frozenset({Status.SCHEDULED, Status.DISPATCHED, Status.FAILED})
_ON_TERMINAL: Mapping[CommandKind, Moves | Refused] = {
    kind: Refused(AlreadySubmitted if kind is CommandKind.SUBMIT else AlreadyTerminal)
    for kind in CommandKind
}

TRANSITIONS: Mapping[Status | None, Mapping[CommandKind, Moves | Refused]] = {
    None: {
        CommandKind.SUBMIT: Moves(frozenset({Status.SCHEDULED, Status.DISPATCHED})),
        CommandKind.HANDOFF_TIMER: Refused(ServiceCallNotFound),
        CommandKind.DISPATCH_LEASE_TIMER: Refused(ServiceCallNotFound),
        CommandKind.ATTEMPT_DEADLINE_TIMER: Refused(ServiceCallNotFound),
        CommandKind.EXECUTION_STARTED: Refused(ServiceCallNotFound),
        CommandKind.EXECUTION_SUCCEEDED: Refused(ServiceCallNotFound),
        CommandKind.EXECUTION_FAILED: Refused(ServiceCallNotFound),
        CommandKind.CANCEL: Refused(ServiceCallNotFound),
        CommandKind.RESCHEDULE: Refused(ServiceCallNotFound),
        CommandKind.RUN_NOW: Refused(ServiceCallNotFound),
        CommandKind.ABANDON: Refused(ServiceCallNotFound),
        CommandKind.RELEASE: Refused(ServiceCallNotFound),
        CommandKind.HOLD: Refused(ServiceCallNotFound),
    },
    Status.SCHEDULED: {
        CommandKind.SUBMIT: Refused(AlreadySubmitted),
        # FAILED: the hand-off came more than max_lateness after the due time (too late).
        CommandKind.HANDOFF_TIMER: Moves(frozenset({Status.DISPATCHED, Status.FAILED})),
        CommandKind.DISPATCH_LEASE_TIMER: Refused(StaleTimer),
        CommandKind.ATTEMPT_DEADLINE_TIMER: Refused(StaleTimer),
        CommandKind.EXECUTION_STARTED: Refused(IllegalTransition),
        CommandKind.EXECUTION_SUCCEEDED: Refused(IllegalTransition),
        CommandKind.EXECUTION_FAILED: Refused(IllegalTransition),
        CommandKind.CANCEL: Moves(frozenset({Status.CANCELED})),
        CommandKind.RESCHEDULE: Moves(frozenset({Status.SCHEDULED, Status.DISPATCHED})),
        CommandKind.RUN_NOW: Moves(frozenset({Status.DISPATCHED})),
        CommandKind.ABANDON: Moves(frozenset({Status.FAILED})),
        # Of a held call; any other Scheduled call is refused (NotHeld).
        CommandKind.RELEASE: Moves(frozenset({Status.DISPATCHED, Status.FAILED})),
        CommandKind.HOLD: Moves(frozenset({Status.SCHEDULED})),
    },
    Status.DISPATCHED: {
        CommandKind.SUBMIT: Refused(AlreadySubmitted),
        CommandKind.HANDOFF_TIMER: Refused(StaleTimer),
        CommandKind.DISPATCH_LEASE_TIMER: Moves(frozenset({Status.DISPATCHED, Status.FAILED})),
        CommandKind.ATTEMPT_DEADLINE_TIMER: Refused(StaleTimer),
        CommandKind.EXECUTION_STARTED: Moves(frozenset({Status.RUNNING})),
        CommandKind.EXECUTION_SUCCEEDED: Moves(frozenset({Status.SUCCEEDED})),
        CommandKind.EXECUTION_FAILED: Moves(_RETRY),
        CommandKind.CANCEL: Refused(NotCancelable),
        CommandKind.RESCHEDULE: Refused(NotReschedulable),
        CommandKind.RUN_NOW: Refused(NotReschedulable),
        CommandKind.ABANDON: Moves(frozenset({Status.FAILED})),
        CommandKind.RELEASE: Refused(NotHeld),
        CommandKind.HOLD: Refused(NotHeld),
    },
    Status.RUNNING: {
        CommandKind.SUBMIT: Refused(AlreadySubmitted),
        CommandKind.HANDOFF_TIMER: Refused(StaleTimer),
        CommandKind.DISPATCH_LEASE_TIMER: Refused(StaleTimer),
        CommandKind.ATTEMPT_DEADLINE_TIMER: Moves(_RETRY),
        CommandKind.EXECUTION_STARTED: Refused(Duplicate),
        CommandKind.EXECUTION_SUCCEEDED: Moves(frozenset({Status.SUCCEEDED})),
        CommandKind.EXECUTION_FAILED: Moves(_RETRY),
        CommandKind.CANCEL: Refused(NotCancelable),
        CommandKind.RESCHEDULE: Refused(NotReschedulable),
        CommandKind.RUN_NOW: Refused(NotReschedulable),
        CommandKind.ABANDON: Moves(frozenset({Status.FAILED})),
        CommandKind.RELEASE: Refused(NotHeld),
        CommandKind.HOLD: Refused(NotHeld),
    },
    Status.SUCCEEDED: _ON_TERMINAL,
    Status.FAILED: _ON_TERMINAL,
    Status.CANCELED: _ON_TERMINAL,
}


def decide(
    state: ServiceCallState | None,
    command: Command,
    now: datetime,
    timing: Timing,
    gate: str | None = None,
) -> Decision:
    """`gate` is the call's queue gate as the service layer sees it now (queue_gate in
    orchestrator/domain/queues.py): None lets a due hand-off go to the executor as always;
    a reason holds it instead (`Held`), for the queue dispatcher to release (ReleaseServiceCall).
    It is an input like `now`, not part of a command: every path that can hand a call off
    (a submit due now, the hand-off timer, a retry or a reschedule within the lead, run now)
    must see it, and whether a queue gates changes while the call waits."""
    if isinstance(command, SubmitServiceCall):
        return _submit(state, command, now, timing, gate)
    if state is None:
        return ServiceCallNotFound(kind_of(command))
    if isinstance(state, TERMINAL):
        return AlreadyTerminal(status_of(state))
    match command:
        case FireTimer():
            return _fire_timer(state, command, now, timing, gate)
        case RecordExecutionStarted():
            return _started(state, command, now, timing)
        case RecordExecutionSucceeded():
            return _succeeded(state, command, now)
        case RecordExecutionFailed():
            return _failed(state, command, now, timing, gate)
        case CancelServiceCall():
            return _cancel(state, command, now)
        case RescheduleServiceCall():
            return _reschedule(state, command.due_at, command.expected_version, now, timing, gate)
        case RunServiceCallNow():
            # Of a held call too: it becomes due now and, still gated, waits first in line.
            return _reschedule(state, now, None, now, timing, gate)
        case AbandonServiceCall():
            return (ev.Abandoned(at=now, reason=command.reason),)
        case ReleaseServiceCall():
            return _release(state, command, now, timing)
        case HoldServiceCall():
            if not _is_held(state, command.attempt):
                return NotHeld(status_of(state), command.attempt)
            return (ev.Held(at=now, attempt=command.attempt, reason=command.reason),)
        case _:
            assert_never(command)


def _submit(
    state: ServiceCallState | None,
    command: SubmitServiceCall,
    now: datetime,
    timing: Timing,
    gate: str | None,
) -> Decision:
    if state is not None:
        # Holds for terminal calls too: a client retrying a submission must get the call back.
        if state.spec.fingerprint == command.spec.fingerprint:
            return AlreadySubmitted(state)
        return IdempotencyConflict(state.spec.service_call_id, state.spec.idempotency_key)
    return (
        ev.Submitted(at=now, spec=command.spec, due_at=command.due_at),
        *_handoff(1, command.due_at, command.spec.max_lateness, now, timing, gate),
    )


def _handoff(
    attempt: int,
    due_at: datetime,
    max_lateness: timedelta | None,
    now: datetime,
    timing: Timing,
    gate: str | None,
) -> tuple[ev.Event, ...]:
    handoff_at = due_at - timing.handoff_lead
    if handoff_at <= now:
        return _dispatch_or_hold(attempt, due_at, max_lateness, now, timing, gate)
    return (
        ev.TimerRequested(
            at=now, purpose=TimerPurpose.HANDOFF, attempt=attempt, fire_at=handoff_at
        ),
    )


def _dispatch_or_hold(
    attempt: int,
    due_at: datetime,
    max_lateness: timedelta | None,
    now: datetime,
    timing: Timing,
    gate: str | None,
) -> tuple[ev.Event, ...]:
    if gate is None:
        return _dispatch(attempt, due_at, max_lateness, now, timing)
    if max_lateness is not None and now > due_at + max_lateness:
        return _dispatch(attempt, due_at, max_lateness, now, timing)  # TooLate, not held
    return (ev.Held(at=now, attempt=attempt, reason=gate),)


def _is_held(state: ActiveState, attempt: int) -> bool:
    return (
        isinstance(state, Scheduled) and state.held_reason is not None and state.attempt == attempt
    )


def _release(
    state: ActiveState, command: ReleaseServiceCall, now: datetime, timing: Timing
) -> Decision:
    if not _is_held(state, command.attempt):
        return NotHeld(status_of(state), command.attempt)
    assert isinstance(state, Scheduled)
    # Never before the due time: a release is a permission, not a reschedule. max_lateness
    # still counts from the due time: a call held past it ends FAILED unsent (TooLate).
    send_at = max(state.due_at, command.send_at)
    return _dispatch(state.attempt, state.due_at, state.spec.max_lateness, now, timing, send_at)


def _dispatch(
    attempt: int,
    due_at: datetime,
    max_lateness: timedelta | None,
    now: datetime,
    timing: Timing,
    send_at: datetime | None = None,
) -> tuple[ev.Event, ...]:
    # Measured against this attempt's own due time (a retry's is its retry time), when the
    # mesh comes to hand it off: after an outage of the scheduler or the orchestrator, or
    # when a lost hand-off is sent again. The executor checks the same bound when it comes to
    # send (ExecutionRequested.send_deadline), which covers a hand-off on time that waits
    # too long at the executor.
    if max_lateness is not None and now > due_at + max_lateness:
        return (
            ev.TooLate(at=now, attempt=attempt, reason=too_late_reason(due_at, max_lateness, now)),
        )
    # The lease runs from due_at, not from the hand-off: the executor holds the call until
    # then, and only a missing Started after that means the hand-off was lost.
    not_before = due_at if send_at is None else send_at
    lease_expires_at = max(now, not_before) + timing.dispatch_lease
    return (
        ev.ExecutionRequested(
            at=now, attempt=attempt, not_before=not_before, lease_expires_at=lease_expires_at
        ),
        ev.TimerRequested(
            at=now,
            purpose=TimerPurpose.DISPATCH_LEASE,
            attempt=attempt,
            fire_at=lease_expires_at,
        ),
    )


def _fire_timer(
    state: ActiveState, command: FireTimer, now: datetime, timing: Timing, gate: str | None
) -> Decision:
    stale = StaleTimer(command.purpose, command.attempt, command.fire_at)
    if command.attempt != state.attempt:
        return stale
    match command.purpose:
        case TimerPurpose.HANDOFF:
            if not isinstance(state, Scheduled) or command.fire_at != state.handoff_at:
                return stale
        case TimerPurpose.DISPATCH_LEASE:
            if not isinstance(state, Dispatched) or command.fire_at != state.lease_expires_at:
                return stale
        case TimerPurpose.ATTEMPT_DEADLINE:
            if not isinstance(state, Running) or command.fire_at != state.deadline:
                return stale
        case _:
            assert_never(command.purpose)
    # A hand-off may come early by design, up to handoff_early_max (crowded due times, see
    # Timing); any other timer, or a hand-off earlier still, means the scheduler's clock ran
    # ahead of ours.
    early_ok = timing.handoff_early_max if command.purpose is TimerPurpose.HANDOFF else timedelta(0)
    if now < command.fire_at - early_ok:
        # Acting now would act too early; dropping the timer would strand the call. Arm it
        # again instead.
        return (
            ev.TimerRequested(
                at=now, purpose=command.purpose, attempt=command.attempt, fire_at=command.fire_at
            ),
        )
    match state:
        case Scheduled():
            return _dispatch_or_hold(
                state.attempt, state.due_at, state.spec.max_lateness, now, timing, gate
            )
        case Dispatched():
            # A lost hand-off is sent again as it was released (its queue already let it go).
            return _dispatch(state.attempt, state.due_at, state.spec.max_lateness, now, timing)
        case Running():
            watchdog = ExecutionResult(
                response_status=None,
                response_snippet="",
                error="attempt_deadline_exceeded",
                retryable=True,
                retry_after=None,
                ended_at=now,
            )
            return _fail(state, watchdog, AttemptOutcome.TIMED_OUT, now, timing, gate)
        case _:
            assert_never(state)


def watchdog_timer(state: ServiceCallState) -> FireTimer | None:
    """The timer the orchestrator's watchdog keeps for a call, as the command its firing is:
    the dispatch lease of a Dispatched call, the attempt deadline of a Running one, the
    hand-off of a Scheduled one (a backstop for the scheduler's, see `watchdog_due`); None
    once the call is finished.

    It passes `_fire_timer`'s guards by construction (same purpose, attempt and fire time the
    state holds), so whoever keeps the timer only has to apply it once its time has passed.
    """
    match state:
        case Scheduled(handoff_at=datetime() as handoff_at):
            return FireTimer(
                purpose=TimerPurpose.HANDOFF, attempt=state.attempt, fire_at=handoff_at
            )
        case Dispatched():
            return FireTimer(
                purpose=TimerPurpose.DISPATCH_LEASE,
                attempt=state.attempt,
                fire_at=state.lease_expires_at,
            )
        case Running():
            return FireTimer(
                purpose=TimerPurpose.ATTEMPT_DEADLINE, attempt=state.attempt, fire_at=state.deadline
            )
        case Scheduled() | Succeeded() | Failed() | Canceled():
            return None
        case _:
            assert_never(state)


def watchdog_due(state: ServiceCallState, handoff_backstop: timedelta) -> datetime | None:
    """When the watchdog applies `watchdog_timer(state)`: at the fire time of a lease or a
    deadline (the watchdog is their only keeper), but only `handoff_backstop` after a
    hand-off's, which the scheduler keeps on the millisecond; the watchdog hands the call off
    itself only when the timer request or its DueTimeReached was lost. Whichever of the two
    comes second finds the call Dispatched and is refused as a stale timer."""
    timer = watchdog_timer(state)
    if timer is None:
        return None
    if timer.purpose is TimerPurpose.HANDOFF:
        return timer.fire_at + handoff_backstop
    return timer.fire_at


def _reported_on(
    state: ActiveState, kind: CommandKind, attempt: int
) -> Dispatched | Running | DomainError:
    if attempt < state.attempt:
        return StaleEvent(kind, attempt, state.attempt)
    if attempt > state.attempt or isinstance(state, Scheduled):
        # The attempt has not been handed off yet, so no executor can be reporting on it.
        return IllegalTransition(status_of(state), kind, attempt)
    return state


def _started(
    state: ActiveState, command: RecordExecutionStarted, now: datetime, timing: Timing
) -> Decision:
    reported = _reported_on(state, CommandKind.EXECUTION_STARTED, command.attempt)
    match reported:
        case Running():
            # A second executor picked up a re-dispatched hand-off, or Kafka redelivered.
            return Duplicate(CommandKind.EXECUTION_STARTED, command.attempt)
        case Dispatched():
            if command.started_at < reported.due_at:
                return StartedTooEarly(command.attempt, command.started_at, reported.due_at)
            deadline = (
                command.started_at + reported.spec.request.attempt_timeout + timing.attempt_grace
            )
            return (
                ev.ExecutionStarted(
                    at=now,
                    attempt=command.attempt,
                    started_at=command.started_at,
                    deadline=deadline,
                ),
                ev.TimerRequested(
                    at=now,
                    purpose=TimerPurpose.ATTEMPT_DEADLINE,
                    attempt=command.attempt,
                    fire_at=deadline,
                ),
            )
        case _:
            return reported


# A result is accepted from Dispatched as well as Running. On one partition Started precedes
# the result of the same executor, but the executor may fail to publish Started (it does not
# wait for the broker before sending) and still publish the result. The result is what
# happened on the wire; refusing it would leave the lease to send the request once more.


def _succeeded(state: ActiveState, command: RecordExecutionSucceeded, now: datetime) -> Decision:
    reported = _reported_on(state, CommandKind.EXECUTION_SUCCEEDED, command.attempt)
    if not isinstance(reported, Dispatched | Running):
        return reported
    if error := _result_too_early(reported, command.attempt, command.result):
        return error
    return (ev.ExecutionSucceeded(at=now, attempt=command.attempt, result=command.result),)


def _failed(
    state: ActiveState,
    command: RecordExecutionFailed,
    now: datetime,
    timing: Timing,
    gate: str | None,
) -> Decision:
    reported = _reported_on(state, CommandKind.EXECUTION_FAILED, command.attempt)
    if not isinstance(reported, Dispatched | Running):
        return reported
    if error := _result_too_early(reported, command.attempt, command.result):
        return error
    return _fail(reported, command.result, AttemptOutcome.FAILED, now, timing, gate)


def _result_too_early(
    state: Dispatched | Running, attempt: int, result: ExecutionResult
) -> StartedTooEarly | None:
    # Without a Started event the result's start (or its end) stands in (see evolve).
    if isinstance(state, Dispatched):
        started = result.started_at or result.ended_at
        if started < state.due_at:
            return StartedTooEarly(attempt, started, state.due_at)
    return None


def _fail(
    state: Dispatched | Running,
    result: ExecutionResult,
    outcome: AttemptOutcome,
    now: datetime,
    timing: Timing,
    gate: str | None,
) -> tuple[ev.Event, ...]:
    if state.attempts:
        first_started = state.attempts[0].started_at
    elif isinstance(state, Running):
        first_started = state.started_at
    else:
        first_started = result.ended_at
    retry = decide_retry(
        policy=state.spec.retry_policy,
        service_call_id=state.spec.service_call_id,
        attempt=state.attempt,
        result=result,
        outcome=outcome,
        now=now,
        first_attempt_started_at=first_started,
        response_rules=state.spec.response_rules,
    )
    failed = ev.ExecutionFailed(
        at=now,
        attempt=state.attempt,
        result=result,
        outcome=outcome,
        retry_at=retry.retry_at,
        reason=retry.reason,
    )
    if retry.retry_at is None:
        return (failed,)
    return (
        failed,
        *_handoff(state.attempt + 1, retry.retry_at, state.spec.max_lateness, now, timing, gate),
    )


def _cancel(state: ActiveState, command: CancelServiceCall, now: datetime) -> Decision:
    match state:
        case Scheduled():
            return (ev.Canceled(at=now, reason=command.reason),)
        case Dispatched() | Running():
            # Documented behaviour: once handed off, the request may already be on the wire.
            return NotCancelable(status_of(state))
        case _:
            assert_never(state)


def _reschedule(
    state: ActiveState,
    due_at: datetime,
    expected_version: int | None,
    now: datetime,
    timing: Timing,
    gate: str | None,
) -> Decision:
    match state:
        case Scheduled():
            if expected_version is not None and expected_version != state.version:
                return VersionMismatch(expected_version, state.version)
            return (
                ev.Rescheduled(at=now, due_at=due_at),
                *_handoff(state.attempt, due_at, state.spec.max_lateness, now, timing, gate),
            )
        case Dispatched() | Running():
            return NotReschedulable(status_of(state))
        case _:
            assert_never(state)


def evolve(state: ServiceCallState | None, event: ev.Event) -> ServiceCallState:
    # Raises only on an event decide would never produce for this state: a programmer error
    # or a corrupt log, never something to handle.
    match event:
        case ev.Submitted():
            if state is not None:
                raise _illegal(state, event)
            return Scheduled(
                spec=event.spec,
                version=1,
                attempts=(),
                due_at=event.due_at,
                attempt=1,
                handoff_at=None,
            )
        case ev.TimerRequested():
            return _evolve_timer(state, event)
        case ev.ExecutionRequested():
            if (
                not isinstance(state, Scheduled | Dispatched)
                or event.attempt != state.attempt
                or event.not_before < state.due_at
            ):
                raise _illegal(state, event)
            return Dispatched(
                spec=state.spec,
                version=state.version + 1,
                attempts=state.attempts,
                due_at=state.due_at,
                attempt=state.attempt,
                dispatched_at=event.at,
                lease_expires_at=event.lease_expires_at,
            )
        case ev.ExecutionStarted():
            if not isinstance(state, Dispatched) or event.attempt != state.attempt:
                raise _illegal(state, event)
            return Running(
                spec=state.spec,
                version=state.version + 1,
                attempts=state.attempts,
                due_at=state.due_at,
                attempt=state.attempt,
                started_at=event.started_at,
                deadline=event.deadline,
            )
        case ev.ExecutionSucceeded():
            if not isinstance(state, Dispatched | Running) or event.attempt != state.attempt:
                raise _illegal(state, event)
            attempt = _finished_attempt(
                state, event.result, AttemptOutcome.SUCCEEDED, retry_reason=""
            )
            return Succeeded(
                spec=state.spec,
                version=state.version + 1,
                attempts=(*state.attempts, attempt),
                completed_at=event.at,
            )
        case ev.ExecutionFailed():
            if not isinstance(state, Dispatched | Running) or event.attempt != state.attempt:
                raise _illegal(state, event)
            attempts = (
                *state.attempts,
                _finished_attempt(state, event.result, event.outcome, retry_reason=event.reason),
            )
            if event.retry_at is None:
                return Failed(
                    spec=state.spec,
                    version=state.version + 1,
                    attempts=attempts,
                    completed_at=event.at,
                    reason=event.reason,
                )
            return Scheduled(
                spec=state.spec,
                version=state.version + 1,
                attempts=attempts,
                due_at=event.retry_at,
                attempt=state.attempt + 1,
                handoff_at=None,
            )
        case ev.Canceled():
            if not isinstance(state, Scheduled):
                raise _illegal(state, event)
            return Canceled(
                spec=state.spec,
                version=state.version + 1,
                attempts=state.attempts,
                canceled_at=event.at,
                reason=event.reason,
            )
        case ev.Rescheduled():
            if not isinstance(state, Scheduled):
                raise _illegal(state, event)
            return replace(
                state,
                version=state.version + 1,
                due_at=event.due_at,
                handoff_at=None,
                held_reason=None,
            )
        case ev.TooLate():
            # No attempt is recorded: none was made (a re-dispatched one never started).
            if not isinstance(state, Scheduled | Dispatched) or event.attempt != state.attempt:
                raise _illegal(state, event)
            return Failed(
                spec=state.spec,
                version=state.version + 1,
                attempts=state.attempts,
                completed_at=event.at,
                reason=event.reason,
            )
        case ev.Held():
            if not isinstance(state, Scheduled) or event.attempt != state.attempt:
                raise _illegal(state, event)
            return replace(
                state, version=state.version + 1, handoff_at=None, held_reason=event.reason
            )
        case ev.Abandoned():
            if not isinstance(state, Scheduled | Dispatched | Running):
                raise _illegal(state, event)
            return Failed(
                spec=state.spec,
                version=state.version + 1,
                attempts=state.attempts,
                completed_at=event.at,
                reason=event.reason,
            )
        case _:
            assert_never(event)


def _evolve_timer(state: ServiceCallState | None, event: ev.TimerRequested) -> ServiceCallState:
    match event.purpose:
        case TimerPurpose.HANDOFF:
            if not isinstance(state, Scheduled) or event.attempt != state.attempt:
                raise _illegal(state, event)
            return replace(
                state, version=state.version + 1, handoff_at=event.fire_at, held_reason=None
            )
        case TimerPurpose.DISPATCH_LEASE:
            if not isinstance(state, Dispatched) or event.attempt != state.attempt:
                raise _illegal(state, event)
            return replace(state, version=state.version + 1)
        case TimerPurpose.ATTEMPT_DEADLINE:
            if not isinstance(state, Running) or event.attempt != state.attempt:
                raise _illegal(state, event)
            return replace(state, version=state.version + 1)
        case _:
            assert_never(event.purpose)


def _finished_attempt(
    state: Dispatched | Running,
    result: ExecutionResult,
    outcome: AttemptOutcome,
    *,
    retry_reason: str,
) -> Attempt:
    return Attempt(
        number=state.attempt,
        # Without a Started event the result says when the request went out (executors send
        # Started only for slow attempts); from an older executor that did not, the result
        # time is the closest fact. Either is at or after due_at (decide checks it).
        started_at=(
            state.started_at
            if isinstance(state, Running)
            else (result.started_at or result.ended_at)
        ),
        ended_at=result.ended_at,
        outcome=outcome,
        response_status=result.response_status,
        response_snippet=result.response_snippet,
        error=result.error,
        retry_reason=retry_reason,
        retry_after=result.retry_after,
    )


def too_late_reason(due_at: datetime, max_lateness: timedelta, now: datetime) -> str:
    """Why a call ends FAILED unsent: how late, after which due time, over which bound."""
    due = due_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return (
        f"not sent: {span(now - due_at)} past its due time {due}, "
        f"over max_lateness {span(max_lateness)}"
    )


def span(delta: timedelta) -> str:
    """A duration for people: "4m12s", "1d2h", "850ms"; whole units, largest first."""
    millis = delta // timedelta(milliseconds=1)
    if millis < 1000:
        return f"{millis}ms"
    seconds = millis // 1000
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _illegal(state: ServiceCallState | None, event: ev.Event) -> ValueError:
    status = "nothing" if state is None else status_of(state).value
    return ValueError(f"{type(event).__name__} cannot apply to {status}: {event!r}")


def replay(events: Iterable[ev.Event], initial: ServiceCallState | None = None) -> ServiceCallState:
    state = initial
    for event in events:
        state = evolve(state, event)
    if state is None:
        raise ValueError("no events to replay")
    return state
