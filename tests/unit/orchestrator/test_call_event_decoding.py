"""The consumer's decode step (mapping.decode_call_event): what reaches the use case, what is
ignored, and what is unreadable (parked at once by the consumer runner, never retried)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mesh.kafka import ReceivedMessage, UnreadableMessageError
from mesh.timeconv import to_timestamp
from orchestrator.domain.commands import FireTimer, TimerPurpose
from orchestrator.entrypoints.consumer import CallEventHandler
from orchestrator.mapping import decode_call_event
from servicecall.internal.v1 import events_pb2 as pb
from tests.unit.orchestrator.test_watchdog import fake_world

FIRE_AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def received(envelope: pb.Envelope | bytes) -> ReceivedMessage:
    value = envelope if isinstance(envelope, bytes) else envelope.SerializeToString()
    return ReceivedMessage("timer-events", 0, 1, "t/c", value)


def test_a_fired_timer_becomes_the_fact_to_apply() -> None:
    fact = decode_call_event(
        received(
            pb.Envelope(
                event_id="e-1",
                tenant_id="t",
                service_call_id="c",
                correlation_id="corr",
                due_time_reached=pb.DueTimeReached(
                    purpose=pb.TIMER_PURPOSE_HANDOFF, attempt=2, fire_time=to_timestamp(FIRE_AT)
                ),
            )
        )
    )
    assert fact is not None
    assert (fact.tenant_id, fact.service_call_id, fact.event_id, fact.correlation_id) == (
        "t",
        "c",
        "e-1",
        "corr",
    )
    assert fact.command == FireTimer(purpose=TimerPurpose.HANDOFF, attempt=2, fire_at=FIRE_AT)
    assert fact.payload == "due_time_reached"


def test_a_payload_the_orchestrator_does_not_act_on_is_ignored() -> None:
    envelope = pb.Envelope(tenant_id="t", submitted=pb.ServiceCallSubmitted())
    assert decode_call_event(received(envelope)) is None


async def test_an_unknown_timer_purpose_is_unreadable_so_it_is_parked_at_once() -> None:
    handler = CallEventHandler(fake_world().orchestrator)
    envelope = pb.Envelope(
        tenant_id="t",
        service_call_id="c",
        due_time_reached=pb.DueTimeReached(purpose=pb.TimerPurpose.ValueType(0), attempt=1),
    )
    with pytest.raises(UnreadableMessageError, match="unknown timer purpose 0"):
        await handler(received(envelope))
