"""Parking: a message or outbox row the mesh cannot handle is kept, and its call fails."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mesh.kafka import ReceivedMessage, UnreadableMessageError
from mesh.ports import OutgoingMessage
from orchestrator.domain.states import Failed, Scheduled
from orchestrator.entrypoints.consumer import CallEventHandler
from orchestrator.entrypoints.parking import Parking
from orchestrator.mapping import command_from_envelope
from orchestrator.ports import OutboxRow, ParkedItem
from servicecall.internal.v1 import events_pb2 as pb
from tests.contracts.watchdog import World
from tests.unit.orchestrator.test_watchdog import fake_world


class RecordingLot:
    def __init__(self) -> None:
        self.items: list[ParkedItem] = []

    async def park(self, item: ParkedItem) -> int:
        self.items.append(item)
        return len(self.items)


@pytest.fixture
def world() -> World:
    return fake_world()


def message(key: str, value: bytes, offset: int = 7) -> ReceivedMessage:
    return ReceivedMessage("timer-events", 3, offset, key, value)


async def test_a_parked_message_is_kept_and_its_call_failed_with_a_reason(world: World) -> None:
    call = await world.submit(due_in=timedelta(hours=1))
    spec = call.spec
    lot = RecordingLot()
    parking = Parking(lot, world.orchestrator, "orchestrator")
    poison = message(f"{spec.tenant_id}/{spec.service_call_id}", b"\xff\x00junk")

    await parking.park_message(poison, ValueError("cannot apply"))
    await parking.park_message(poison, ValueError("cannot apply"))  # a retried park

    assert lot.items[0].payload == poison.value
    assert (lot.items[0].kafka_partition, lot.items[0].kafka_offset) == (3, 7)
    assert lot.items[0].tenant_id == spec.tenant_id
    assert "ValueError: cannot apply" in lot.items[0].error
    state = await world.state(call)
    assert isinstance(state, Failed)
    assert "could not apply a message about this call" in state.reason
    assert state.version == call.version + 1  # abandoned once, however often parked


async def test_a_message_naming_no_call_is_parked_and_nothing_else_changes(world: World) -> None:
    call = await world.submit(due_in=timedelta(hours=1))
    lot = RecordingLot()
    await Parking(lot, world.orchestrator, "orchestrator").park_message(
        message("not-a-call-key", b"x"), ValueError("bad")
    )
    assert len(lot.items) == 1 and lot.items[0].tenant_id is None
    assert isinstance(await world.state(call), Scheduled)


async def test_a_refused_outbox_row_is_parked_and_its_call_failed(world: World) -> None:
    call = await world.submit(due_in=timedelta(hours=1))
    spec = call.spec
    lot = RecordingLot()
    row = OutboxRow(
        41, OutgoingMessage("execution-requests", f"{spec.tenant_id}/{spec.service_call_id}", b"x")
    )
    await Parking(lot, world.orchestrator, "orchestrator").refuse_outbox_row(
        row, "MSG_SIZE_TOO_LARGE"
    )
    assert lot.items[0].outbox_id == 41 and lot.items[0].source == "outbox"
    state = await world.state(call)
    assert isinstance(state, Failed) and "MSG_SIZE_TOO_LARGE" in state.reason


def test_an_unknown_timer_purpose_is_unreadable_not_a_key_error() -> None:
    envelope = pb.Envelope(
        due_time_reached=pb.DueTimeReached(purpose=pb.TimerPurpose.ValueType(0), attempt=1)
    )
    with pytest.raises(UnreadableMessageError, match="unknown timer purpose 0"):
        command_from_envelope(envelope)


async def test_an_undecodable_message_raises_so_the_consumer_parks_it(world: World) -> None:
    handler = CallEventHandler(world.orchestrator)
    with pytest.raises(UnreadableMessageError):
        await handler(message("t/c", b"\xff\xff\xff\xff"))
