"""Test data for the domain core: specs, results, and states reached through decide/evolve."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

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
)
from orchestrator.domain.decide import Decision, decide, evolve
from orchestrator.domain.events import Event
from orchestrator.domain.idempotency import DueSpec, fingerprint, service_call_id_for
from orchestrator.domain.model import (
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMING,
    ExecutionResult,
    HttpRequest,
    RetryPolicy,
    ServiceCallSpec,
    Timing,
)
from orchestrator.domain.states import (
    Dispatched,
    Running,
    Scheduled,
    ServiceCallState,
    Status,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TIMING = DEFAULT_TIMING
DUE = T0 + timedelta(hours=1)
SECOND = timedelta(seconds=1)
FINGERPRINT_KEY = b"test-fingerprint-key"


def http_request(**changes: object) -> HttpRequest:
    base = HttpRequest(
        method="POST",
        url="https://api.example.com/hooks/1",
        headers=(("Content-Type", "application/json"),),
        body=b'{"hello": "world"}',
        attempt_timeout=timedelta(seconds=10),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def retry_policy(**changes: object) -> RetryPolicy:
    return replace(DEFAULT_RETRY_POLICY, **changes)  # type: ignore[arg-type]


def service_call_spec(
    *,
    request: HttpRequest | None = None,
    policy: RetryPolicy | None = None,
    tags: frozenset[str] = frozenset({"billing"}),
    due: DueSpec = DUE,
    tenant_id: str = "acme",
    idempotency_key: str = "order-42",
    created_at: datetime = T0,
) -> ServiceCallSpec:
    request = request or http_request()
    policy = policy or retry_policy()
    return ServiceCallSpec(
        tenant_id=tenant_id,
        service_call_id=service_call_id_for(tenant_id, idempotency_key),
        request=request,
        tags=tags,
        idempotency_key=idempotency_key,
        retry_policy=policy,
        fingerprint=fingerprint(request, tags, policy, due, key=FINGERPRINT_KEY),
        created_at=created_at,
    )


SPEC = service_call_spec()


def execution_result(
    *,
    ended_at: datetime,
    status: int | None = 200,
    error: str = "",
    retryable: bool = False,
    retry_after: timedelta | None = None,
    started_at: datetime | None = None,
) -> ExecutionResult:
    return ExecutionResult(
        response_status=status,
        response_snippet="{}",
        error=error,
        retryable=retryable,
        retry_after=retry_after,
        ended_at=ended_at,
        started_at=started_at,
    )


def events_of(decision: Decision) -> tuple[Event, ...]:
    assert isinstance(decision, tuple), f"expected events, got {decision!r}"
    return decision


def apply(state: ServiceCallState | None, events: tuple[Event, ...]) -> ServiceCallState:
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state


def step(
    state: ServiceCallState | None,
    command: Command,
    now: datetime,
    timing: Timing = TIMING,
    gate: str | None = None,
) -> ServiceCallState:
    return apply(state, events_of(decide(state, command, now, timing, gate)))


def scheduled(spec: ServiceCallSpec = SPEC, due_at: datetime = DUE) -> Scheduled:
    state = step(None, SubmitServiceCall(spec=spec, due_at=due_at), T0)
    assert isinstance(state, Scheduled)
    return state


def held(spec: ServiceCallSpec = SPEC, reason: str = "held by paused queue") -> Scheduled:
    """A Scheduled call whose hand-off came while its queue gated it."""
    before = scheduled(spec)
    assert before.handoff_at is not None
    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=before.handoff_at)
    state = step(before, fire, before.handoff_at, gate=reason)
    assert isinstance(state, Scheduled) and state.held_reason == reason
    return state


def dispatched(spec: ServiceCallSpec = SPEC) -> Dispatched:
    before = scheduled(spec)
    assert before.handoff_at is not None
    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=before.handoff_at)
    state = step(before, fire, before.handoff_at)
    assert isinstance(state, Dispatched)
    return state


def running(spec: ServiceCallSpec = SPEC) -> Running:
    state = step(dispatched(spec), RecordExecutionStarted(attempt=1, started_at=DUE), DUE)
    assert isinstance(state, Running)
    return state


def state_in(status: Status | None) -> ServiceCallState | None:
    # Reached through the core itself, so no test starts from a state it could not produce.
    match status:
        case None:
            return None
        case Status.SCHEDULED:
            return scheduled()
        case Status.DISPATCHED:
            return dispatched()
        case Status.RUNNING:
            return running()
        case Status.SUCCEEDED:
            ok = execution_result(ended_at=DUE + SECOND)
            return step(running(), RecordExecutionSucceeded(attempt=1, result=ok), DUE + SECOND)
        case Status.FAILED:
            gone = execution_result(ended_at=DUE + SECOND, status=404)
            return step(running(), RecordExecutionFailed(attempt=1, result=gone), DUE + SECOND)
        case Status.CANCELED:
            return step(scheduled(), CancelServiceCall(reason="not needed"), T0)


def current_attempt(state: ServiceCallState | None) -> int:
    return state.attempt if isinstance(state, Scheduled | Dispatched | Running) else 1


def due_of(state: ServiceCallState | None) -> datetime:
    return state.due_at if isinstance(state, Scheduled | Dispatched | Running) else DUE


def well_formed(kind: CommandKind, state: ServiceCallState | None) -> tuple[Command, datetime]:
    # The command of that kind a correct mesh would send to `state`, and when.
    attempt = current_attempt(state)
    due_at = due_of(state)
    late = due_at + timedelta(minutes=5)
    match kind:
        case CommandKind.SUBMIT:
            return SubmitServiceCall(spec=SPEC if state is None else state.spec, due_at=DUE), T0
        case CommandKind.HANDOFF_TIMER:
            fire_at = (
                state.handoff_at
                if isinstance(state, Scheduled) and state.handoff_at
                else due_at - TIMING.handoff_lead
            )
            return FireTimer(
                purpose=TimerPurpose.HANDOFF, attempt=attempt, fire_at=fire_at
            ), fire_at
        case CommandKind.DISPATCH_LEASE_TIMER:
            fire_at = (
                state.lease_expires_at
                if isinstance(state, Dispatched)
                else due_at + TIMING.dispatch_lease
            )
            purpose = TimerPurpose.DISPATCH_LEASE
            return FireTimer(purpose=purpose, attempt=attempt, fire_at=fire_at), fire_at
        case CommandKind.ATTEMPT_DEADLINE_TIMER:
            fire_at = state.deadline if isinstance(state, Running) else late
            purpose = TimerPurpose.ATTEMPT_DEADLINE
            return FireTimer(purpose=purpose, attempt=attempt, fire_at=fire_at), fire_at
        case CommandKind.EXECUTION_STARTED:
            return RecordExecutionStarted(attempt=attempt, started_at=due_at), due_at
        case CommandKind.EXECUTION_SUCCEEDED:
            ok = execution_result(ended_at=due_at + SECOND)
            return RecordExecutionSucceeded(attempt=attempt, result=ok), due_at + SECOND
        case CommandKind.EXECUTION_FAILED:
            busy = execution_result(ended_at=due_at + SECOND, status=503, retryable=True)
            return RecordExecutionFailed(attempt=attempt, result=busy), due_at + SECOND
        case CommandKind.CANCEL:
            return CancelServiceCall(reason="changed my mind"), T0
        case CommandKind.RESCHEDULE:
            return RescheduleServiceCall(due_at=DUE + timedelta(hours=1)), T0
        case CommandKind.RUN_NOW:
            return RunServiceCallNow(), T0
        case CommandKind.ABANDON:
            return AbandonServiceCall(reason="parked: cannot be applied"), T0
        case CommandKind.RELEASE:
            return ReleaseServiceCall(attempt=attempt, send_at=due_at), due_at - TIMING.handoff_lead
        case CommandKind.HOLD:
            return HoldServiceCall(attempt=attempt, reason="still paused"), T0
