"""scheduler/mapping.py: TimerRequested in, DueTimeReached out, TimerService messages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from google.protobuf.message import DecodeError

from mesh.timeconv import from_timestamp, to_timestamp
from scheduler import mapping
from scheduler.domain.timers import HANDOFF_PURPOSE, Timer, TimerKey, TimerState
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.internal.v1 import timer_service_pb2 as ts
from tests.fakes.clock import T0

TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def request_envelope() -> pb.Envelope:
    return pb.Envelope(
        event_id="e-1",
        tenant_id="acme",
        service_call_id="call-1",
        correlation_id="corr",
        sequence=7,
        timer_requested=pb.TimerRequested(
            purpose=HANDOFF_PURPOSE,  # type: ignore[arg-type]
            attempt=2,
            fire_time=to_timestamp(T0),
        ),
    )


def test_a_timer_request_decodes_to_the_timer_it_asks_for() -> None:
    timer = mapping.timer_requested(request_envelope().SerializeToString(), TRACE)
    assert timer == Timer(
        key=TimerKey("acme", "call-1", HANDOFF_PURPOSE, 2, T0),
        armed_by="e-1",
        correlation_id="corr",
        sequence=7,
    )
    assert timer is not None
    assert timer.trace_context == TRACE


def test_other_payloads_are_not_for_the_scheduler() -> None:
    envelope = pb.Envelope(event_id="e", due_time_reached=pb.DueTimeReached(attempt=1))
    assert mapping.timer_requested(envelope.SerializeToString(), None) is None


def test_bytes_that_are_no_envelope_raise() -> None:
    with pytest.raises(DecodeError):
        mapping.timer_requested(b"\xff\xff\xff", None)


def test_a_fired_timer_becomes_a_due_time_reached_keyed_by_its_call() -> None:
    timer = Timer(TimerKey("acme", "call-1", HANDOFF_PURPOSE, 2, T0), "e-1", "corr", 7)
    fired_at = T0 + timedelta(milliseconds=3)
    message = mapping.due_time_reached(timer, fired_at, "t.timer-events")
    assert (message.topic, message.key) == ("t.timer-events", "acme/call-1")
    envelope = pb.Envelope.FromString(message.value)
    assert envelope.event_id == "e-1/fired"
    assert (envelope.correlation_id, envelope.sequence) == ("corr", 7)
    due = envelope.due_time_reached
    assert (due.purpose, due.attempt) == (HANDOFF_PURPOSE, 2)
    assert from_timestamp(due.fire_time) == T0
    assert from_timestamp(due.fired_time) == from_timestamp(envelope.occurred_at) == fired_at


def test_a_timer_and_its_page_token_round_trip() -> None:
    timer = Timer(TimerKey("acme", "call-1", 1, 2, T0), "e-1", "corr", 7, TimerState.FIRED)
    proto = mapping.timer_to_proto(timer)
    assert proto.timer_id == timer.timer_id
    assert proto.state == ts.Timer.FIRED
    assert mapping.page_after(mapping.page_token(timer)) == (T0, timer.timer_id)


@pytest.mark.parametrize("token", ["", "bm9wZQ==", "MjAzMHxub3QtYS11dWlk"])
def test_a_page_token_that_is_none_of_ours_is_a_value_error(token: str) -> None:
    with pytest.raises(ValueError):
        mapping.page_after(token)


def test_a_schedule_request_becomes_a_timer_with_the_ids_it_is_given() -> None:
    request = ts.ScheduleTimerRequest(
        tenant_id="acme",
        service_call_id="call-1",
        purpose=1,  # type: ignore[arg-type]
        attempt=3,
        fire_time=to_timestamp(T0),
    )
    timer = mapping.scheduled_timer(request, "api/1", "corr", None)
    assert timer == Timer(TimerKey("acme", "call-1", 1, 3, T0), "api/1", "corr", 0)
