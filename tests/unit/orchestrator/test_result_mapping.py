"""An executor's result becomes the core's command, with the attempt's start derived from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mesh.timeconv import to_duration, to_timestamp
from orchestrator.domain.commands import RecordExecutionFailed, RecordExecutionSucceeded
from orchestrator.mapping import command_from_envelope
from servicecall.internal.v1 import events_pb2 as pb

ENDED = datetime(2030, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC)


def test_the_start_is_the_end_minus_the_duration() -> None:
    envelope = pb.Envelope(
        execution_succeeded=pb.ExecutionSucceeded(
            attempt=3,
            result=pb.AttemptResult(
                response_status=200,
                end_time=to_timestamp(ENDED),
                duration=to_duration(timedelta(milliseconds=40)),
            ),
        )
    )
    command = command_from_envelope(envelope)
    assert isinstance(command, RecordExecutionSucceeded)
    assert command.result.ended_at == ENDED
    assert command.result.started_at == ENDED - timedelta(milliseconds=40)


def test_a_result_without_a_duration_has_no_start() -> None:
    envelope = pb.Envelope(
        execution_failed=pb.ExecutionFailed(
            attempt=1, retryable=True, result=pb.AttemptResult(end_time=to_timestamp(ENDED))
        )
    )
    command = command_from_envelope(envelope)
    assert isinstance(command, RecordExecutionFailed)
    assert command.result.started_at is None
