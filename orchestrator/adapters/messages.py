"""Maps the core's events to Kafka envelopes (outbox rows), and incoming envelopes to commands."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from mesh.ports import OutgoingMessage
from mesh.timeconv import from_duration, from_timestamp, to_timestamp
from mesh.topics import Topics, call_key
from orchestrator.domain import events as ev
from orchestrator.domain.commands import (
    Command,
    FireTimer,
    RecordExecutionFailed,
    RecordExecutionStarted,
    RecordExecutionSucceeded,
    TimerPurpose,
)
from orchestrator.domain.model import ExecutionResult
from orchestrator.domain.states import ServiceCallState, Status, status_of
from orchestrator.mapping import request_to_proto
from orchestrator.sealing import split_sealed
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import service_call_pb2 as api

PURPOSE_TO_PROTO = {
    TimerPurpose.HANDOFF: pb.TIMER_PURPOSE_HANDOFF,
    TimerPurpose.DISPATCH_LEASE: pb.TIMER_PURPOSE_DISPATCH_LEASE,
    TimerPurpose.ATTEMPT_DEADLINE: pb.TIMER_PURPOSE_ATTEMPT_DEADLINE,
}
PURPOSE_FROM_PROTO = {v: k for k, v in PURPOSE_TO_PROTO.items()}

# Timers the orchestrator keeps itself (orchestrator/watchdog.py sweeps the calls'
# `watchdog_at` column), so their TimerRequested never reaches the scheduler. Nearly every
# lease and deadline ends stale (the call moved on first), yet through the scheduler each
# cost an arm, a claim, two Kafka hops and an orchestrator transaction: the load that made
# the hand-offs late on 2 cores. They need no precision; a sweep once a second is enough.
# Only the hand-off, whose timing is the product, stays a durable scheduler timer.
KEPT_BY_ORCHESTRATOR = frozenset({TimerPurpose.DISPATCH_LEASE, TimerPurpose.ATTEMPT_DEADLINE})

_TERMINAL_STATE = {
    Status.SUCCEEDED: api.ServiceCall.SUCCEEDED,
    Status.FAILED: api.ServiceCall.FAILED,
    Status.CANCELED: api.ServiceCall.CANCELED,
}


def outbox_messages(
    before: ServiceCallState | None,
    after: ServiceCallState,
    events: Sequence[ev.Event],
    correlation_id: str,
    topics: Topics,
    max_snippet_bytes: int,
) -> tuple[OutgoingMessage, ...]:
    """One envelope per event that another service acts on or observers care about.

    Event ids are derived from (call, version, index) rather than drawn at random, so the
    same decision always yields the same ids and a consumer's inbox recognises repeats.
    """
    spec = after.spec
    key = call_key(spec.tenant_id, spec.service_call_id)
    base_version = 0 if before is None else before.version
    out: list[OutgoingMessage] = []

    def emit(topic: str, index: int, at: datetime, **payload: object) -> None:
        sequence = base_version + index + 1
        envelope = pb.Envelope(
            event_id=f"{spec.service_call_id}/{sequence}/{len(out)}",
            tenant_id=spec.tenant_id,
            service_call_id=spec.service_call_id,
            correlation_id=correlation_id,
            occurred_at=to_timestamp(at),
            sequence=sequence,
            **payload,  # type: ignore[arg-type]
        )
        out.append(OutgoingMessage(topic, key, envelope.SerializeToString()))

    for index, event in enumerate(events):
        match event:
            case ev.Submitted():
                emit(
                    topics.call_events,
                    index,
                    event.at,
                    submitted=pb.ServiceCallSubmitted(
                        due_time=to_timestamp(event.due_at), tags=sorted(spec.tags)
                    ),
                )
            case ev.TimerRequested() if event.purpose in KEPT_BY_ORCHESTRATOR:
                pass  # the store's watchdog_at column is this timer
            case ev.TimerRequested():
                emit(
                    topics.timer_requests,
                    index,
                    event.at,
                    timer_requested=pb.TimerRequested(
                        purpose=PURPOSE_TO_PROTO[event.purpose],
                        attempt=event.attempt,
                        fire_time=to_timestamp(event.fire_at),
                    ),
                )
            case ev.ExecutionRequested():
                clear, sealed = split_sealed(spec.request.headers)
                emit(
                    topics.execution_requests,
                    index,
                    event.at,
                    execution_requested=pb.ExecutionRequested(
                        attempt=event.attempt,
                        not_before=to_timestamp(event.not_before),
                        lease_expire_time=to_timestamp(event.lease_expires_at),
                        request=request_to_proto(replace(spec.request, headers=clear)),
                        sealed_headers=sealed,
                        # One key per call, so a retry of the same call is recognisable too.
                        idempotency_key=spec.service_call_id,
                        max_response_snippet_bytes=max_snippet_bytes,
                    ),
                )
            case ev.Canceled():
                emit(
                    topics.call_events,
                    index,
                    event.at,
                    canceled=pb.ServiceCallCanceled(reason=event.reason),
                )
            case ev.Rescheduled():
                emit(
                    topics.call_events,
                    index,
                    event.at,
                    rescheduled=pb.ServiceCallRescheduled(due_time=to_timestamp(event.due_at)),
                )
            case ev.Abandoned():
                pass  # the terminal summary below says it
            case ev.ExecutionStarted() | ev.ExecutionSucceeded() | ev.ExecutionFailed():
                pass  # the executor already announced these; the terminal summary follows
    status = status_of(after)
    if status in _TERMINAL_STATE and (before is None or status_of(before) != status):
        reason = getattr(after, "reason", "")
        emit(
            topics.call_events,
            len(events) - 1,
            events[-1].at,
            completed=pb.ServiceCallCompleted(
                state=_TERMINAL_STATE[status], reason=reason, attempt_count=len(after.attempts)
            ),
        )
    return tuple(out)


class UnreadableMessageError(ValueError):
    """A message that decodes but does not make sense (e.g. an enum value this version does
    not know): retrying cannot help, so the consumer parks it (mesh/kafka.py)."""


def command_from_envelope(envelope: pb.Envelope) -> Command | None:
    """The core command an incoming fact asks for; None for messages the orchestrator ignores."""
    match envelope.WhichOneof("payload"):
        case "due_time_reached":
            fired = envelope.due_time_reached
            purpose = PURPOSE_FROM_PROTO.get(fired.purpose)
            if purpose is None:
                raise UnreadableMessageError(f"unknown timer purpose {fired.purpose}")
            return FireTimer(
                purpose=purpose,
                attempt=fired.attempt,
                fire_at=from_timestamp(fired.fire_time),
            )
        case "execution_started":
            started = envelope.execution_started
            return RecordExecutionStarted(
                attempt=started.attempt, started_at=from_timestamp(started.start_time)
            )
        case "execution_succeeded":
            succeeded = envelope.execution_succeeded
            return RecordExecutionSucceeded(
                attempt=succeeded.attempt, result=_result(succeeded.result, False, None)
            )
        case "execution_failed":
            failed = envelope.execution_failed
            retry_after = (
                from_duration(failed.retry_after) if failed.HasField("retry_after") else None
            )
            return RecordExecutionFailed(
                attempt=failed.attempt, result=_result(failed.result, failed.retryable, retry_after)
            )
        case _:
            return None


def _result(
    result: pb.AttemptResult, retryable: bool, retry_after: timedelta | None
) -> ExecutionResult:
    return ExecutionResult(
        response_status=result.response_status or None,
        response_snippet=result.response_snippet,
        error=result.error,
        retryable=retryable,
        retry_after=retry_after,
        ended_at=from_timestamp(result.end_time),
        started_at=(
            from_timestamp(result.end_time) - from_duration(result.duration)
            if result.HasField("duration")
            else None
        ),
    )
