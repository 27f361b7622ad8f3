"""All of the scheduler's protobuf <-> domain mapping: Kafka envelopes in and out, and the
TimerService's messages and page tokens."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from datetime import datetime

from mesh.ports import OutgoingMessage
from mesh.timeconv import from_timestamp, to_timestamp
from mesh.topics import call_key
from scheduler.domain.timers import Timer, TimerKey, TimerState
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.internal.v1 import timer_service_pb2 as ts

# Kafka: the orchestrator's TimerRequested in, DueTimeReached out.


def timer_requested(value: bytes, trace_context: Mapping[str, str] | None) -> Timer | None:
    """The timer a TimerRequested envelope asks for; None for any other payload. Raises on
    bytes that are no envelope. `trace_context` is the trace the fire will continue."""
    envelope = pb.Envelope.FromString(value)
    if envelope.WhichOneof("payload") != "timer_requested":
        return None
    request = envelope.timer_requested
    return Timer(
        key=TimerKey(
            tenant_id=envelope.tenant_id,
            service_call_id=envelope.service_call_id,
            purpose=request.purpose,
            attempt=request.attempt,
            fire_at=from_timestamp(request.fire_time),
        ),
        armed_by=envelope.event_id,
        correlation_id=envelope.correlation_id,
        sequence=envelope.sequence,
        trace_context=trace_context,
    )


def purpose_name(purpose: int) -> str:
    """A timer purpose as the protocol spells it (for logs)."""
    return pb.TimerPurpose.Name(purpose)  # type: ignore[arg-type]


def due_time_reached(timer: Timer, fired_at: datetime, topic: str) -> OutgoingMessage:
    key = timer.key
    envelope = pb.Envelope(
        event_id=timer.fire_event_id,
        tenant_id=key.tenant_id,
        service_call_id=key.service_call_id,
        correlation_id=timer.correlation_id,
        occurred_at=to_timestamp(fired_at),
        sequence=timer.sequence,
        due_time_reached=pb.DueTimeReached(
            purpose=key.purpose,  # type: ignore[arg-type]
            attempt=key.attempt,
            fire_time=to_timestamp(key.fire_at),
            fired_time=to_timestamp(fired_at),
        ),
    )
    return OutgoingMessage(
        topic, call_key(key.tenant_id, key.service_call_id), envelope.SerializeToString()
    )


# gRPC: the TimerService.

_STATE = {
    TimerState.PENDING: ts.Timer.PENDING,
    TimerState.FIRED: ts.Timer.FIRED,
    TimerState.CANCELED: ts.Timer.CANCELED,
}


def timer_to_proto(timer: Timer) -> ts.Timer:
    key = timer.key
    return ts.Timer(
        timer_id=timer.timer_id,
        tenant_id=key.tenant_id,
        service_call_id=key.service_call_id,
        purpose=key.purpose,  # type: ignore[arg-type]
        attempt=key.attempt,
        fire_time=to_timestamp(key.fire_at),
        state=_STATE[timer.state],
        correlation_id=timer.correlation_id,
        sequence=timer.sequence,
    )


def scheduled_timer(
    request: ts.ScheduleTimerRequest,
    armed_by: str,
    correlation_id: str,
    trace_context: Mapping[str, str] | None,
) -> Timer:
    """The timer a ScheduleTimer request asks for (its required fields already checked)."""
    return Timer(
        key=TimerKey(
            tenant_id=request.tenant_id,
            service_call_id=request.service_call_id,
            purpose=request.purpose,
            attempt=request.attempt,
            fire_at=from_timestamp(request.fire_time),
        ),
        armed_by=armed_by,
        correlation_id=correlation_id,
        sequence=0,
        trace_context=trace_context,
    )


def page_token(last: Timer) -> str:
    """The ListTimers token of the page that follows `last`."""
    return base64.urlsafe_b64encode(
        f"{last.key.fire_at.isoformat()}|{last.timer_id}".encode()
    ).decode()


def page_after(token: str) -> tuple[datetime, str]:
    """The (fire time, timer id) a page token continues after; ValueError if it is no token
    (a timer id that is no UUID included)."""
    fire_at, timer_id = base64.urlsafe_b64decode(token.encode()).decode().split("|")
    uuid.UUID(timer_id)
    return datetime.fromisoformat(fire_at), timer_id
