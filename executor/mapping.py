"""All of the executor's proto <-> domain mapping: Kafka envelopes to execution orders, attempt
facts back to envelopes (ReportEnvelopes, the Reports port), held attempts to ListExecutions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from executor.domain.execution import CallRef, ExecutionOrder, ExecutionView, HttpRequest, Stage
from executor.domain.outcome import Failed, Outcome, Succeeded
from mesh.kafka import ReceivedMessage
from mesh.ports import OutgoingMessage
from mesh.timeconv import from_duration, from_timestamp, to_duration, to_timestamp
from mesh.topics import call_key
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.internal.v1 import executor_service_pb2 as xpb
from servicecall.v1 import service_call_pb2 as api

DEFAULT_ATTEMPT_TIMEOUT = timedelta(seconds=30)


class UnreadableOrderError(ValueError):
    """An execution request that cannot be performed as sent (e.g. an unknown method)."""


def _method(value: int) -> str:
    if value == api.HTTP_METHOD_UNSPECIFIED:
        return "POST"
    try:
        return api.HttpMethod.Name(value)  # type: ignore[arg-type]
    except ValueError as e:
        raise UnreadableOrderError(f"unknown http method {value}") from e


def order_from_message(
    message: ReceivedMessage, default_snippet_bytes: int
) -> ExecutionOrder | None:
    """The decode of `execution-requests` (mesh.kafka.decoding): the attempt a message asks
    for; None for any other payload; raises for bytes that are no envelope or an order that
    cannot be performed as sent."""
    return order_from_envelope(pb.Envelope.FromString(message.value), default_snippet_bytes)


def order_from_envelope(envelope: pb.Envelope, default_snippet_bytes: int) -> ExecutionOrder | None:
    """The attempt an envelope asks for; None for any other payload."""
    if envelope.WhichOneof("payload") != "execution_requested":
        return None
    requested = envelope.execution_requested
    spec = requested.request
    timeout = (
        from_duration(spec.attempt_timeout)
        if spec.HasField("attempt_timeout")
        else DEFAULT_ATTEMPT_TIMEOUT
    )
    return ExecutionOrder(
        call=CallRef(
            tenant_id=envelope.tenant_id,
            service_call_id=envelope.service_call_id,
            correlation_id=envelope.correlation_id,
            sequence=envelope.sequence,
        ),
        attempt=requested.attempt,
        not_before=from_timestamp(requested.not_before),
        lease_expires_at=(
            from_timestamp(requested.lease_expire_time)
            if requested.HasField("lease_expire_time")
            else None
        ),
        request=HttpRequest(
            method=_method(spec.http_method),
            url=spec.url,
            headers=tuple(spec.headers.items()),
            body=spec.body,
            timeout=timeout if timeout > timedelta(0) else DEFAULT_ATTEMPT_TIMEOUT,
            tenant_id=envelope.tenant_id,
        ),
        idempotency_key=requested.idempotency_key,
        snippet_bytes=requested.max_response_snippet_bytes or default_snippet_bytes,
        sealed_headers=tuple(sorted(requested.sealed_headers.items())),
        send_deadline=(
            from_timestamp(requested.send_deadline) if requested.HasField("send_deadline") else None
        ),
        success_statuses=_ranges(requested.success_statuses),
    )


def _ranges(ranges: Sequence[api.StatusRange]) -> tuple[tuple[int, int], ...]:
    # `last` 0 is `first` alone (StatusRange). Most calls name none: nothing is built then.
    if not ranges:
        return ()
    return tuple([(r.first, r.last or r.first) for r in ranges])


def _timestamp(at: datetime) -> Timestamp:
    # mesh.timeconv.to_timestamp goes through protobuf's pure-Python FromDatetime; this runs
    # three times per attempt, so it is done with integer arithmetic (same result, UTC).
    delta = at - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _envelope(call: CallRef, event_id: str, at: datetime, **payload: object) -> pb.Envelope:
    return pb.Envelope(
        event_id=event_id,
        tenant_id=call.tenant_id,
        service_call_id=call.service_call_id,
        correlation_id=call.correlation_id,
        sequence=call.sequence,
        occurred_at=_timestamp(at),
        **payload,  # type: ignore[arg-type]
    )


def _key(call: CallRef) -> str:
    return call_key(call.tenant_id, call.service_call_id)


class ReportEnvelopes:
    """The Reports port (executor/ports.py): an attempt's reports as envelopes on `topic`."""

    __slots__ = ("_executor_id", "_topic")

    def __init__(self, topic: str, executor_id: str) -> None:
        self._topic = topic
        self._executor_id = executor_id

    def started(
        self, order: ExecutionOrder, event_id: str, at: datetime, start_time: datetime
    ) -> OutgoingMessage:
        envelope = _envelope(
            order.call,
            event_id,
            at,
            execution_started=pb.ExecutionStarted(
                attempt=order.attempt,
                start_time=_timestamp(start_time),
                executor_id=self._executor_id,
            ),
        )
        return OutgoingMessage(self._topic, _key(order.call), envelope.SerializeToString())

    def result(
        self,
        order: ExecutionOrder,
        event_id: str,
        outcome: Outcome,
        snippet: str,
        started_at: datetime,
        ended_at: datetime,
    ) -> OutgoingMessage:
        duration = max(ended_at - started_at, timedelta(0))
        payload: dict[str, object]
        match outcome:
            case Succeeded(status=status):
                result = pb.AttemptResult(
                    response_status=status,
                    response_snippet=snippet,
                    end_time=_timestamp(ended_at),
                    duration=to_duration(duration),
                )
                payload = {
                    "execution_succeeded": pb.ExecutionSucceeded(
                        attempt=order.attempt, result=result
                    )
                }
            case Failed():
                result = pb.AttemptResult(
                    response_status=outcome.status,
                    response_snippet=snippet,
                    error=outcome.error.value,
                    end_time=_timestamp(ended_at),
                    duration=to_duration(duration),
                )
                failed = pb.ExecutionFailed(
                    attempt=order.attempt, result=result, retryable=outcome.retryable
                )
                if outcome.retry_after is not None:
                    failed.retry_after.CopyFrom(to_duration(outcome.retry_after))
                payload = {"execution_failed": failed}
        envelope = _envelope(order.call, event_id, ended_at, **payload)
        return OutgoingMessage(self._topic, _key(order.call), envelope.SerializeToString())

    def again(self, order: ExecutionOrder, value: bytes) -> OutgoingMessage:
        return OutgoingMessage(self._topic, _key(order.call), value)


_STATE = {Stage.WAITING: xpb.Execution.WAITING, Stage.IN_FLIGHT: xpb.Execution.IN_FLIGHT}


def execution_to_proto(view: ExecutionView) -> xpb.Execution:
    execution = xpb.Execution(
        tenant_id=view.tenant_id,
        service_call_id=view.service_call_id,
        attempt=view.attempt,
        state=_STATE[view.stage],
        not_before=to_timestamp(view.not_before),
    )
    if view.start_time is not None:
        execution.start_time.CopyFrom(to_timestamp(view.start_time))
    return execution
