"""Applies facts from the scheduler and the executor to calls, each exactly once."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from mesh.kafka import ReceivedMessage
from mesh.logs import call_context, get_logger
from orchestrator.adapters.messages import UnreadableMessageError, command_from_envelope
from orchestrator.service import Orchestrator
from servicecall.internal.v1 import events_pb2 as pb

log = get_logger(__name__)


class CallEventHandler:
    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator

    async def __call__(self, message: ReceivedMessage) -> None:
        try:
            envelope = pb.Envelope.FromString(message.value)
        except DecodeError as e:
            # Retrying cannot make it readable: the consumer parks it after its bounded tries,
            # so an operator sees it, and the call it names is failed rather than left stuck.
            raise UnreadableMessageError(f"the message does not decode: {e}") from e
        command = command_from_envelope(envelope)
        if command is None:
            return
        with call_context(envelope.tenant_id, envelope.service_call_id, envelope.correlation_id):
            transition = await self._orchestrator.apply(
                envelope.tenant_id,
                envelope.service_call_id,
                command,
                envelope.event_id,
                envelope.correlation_id,
            )
            if transition is None:
                log.debug("duplicate message ignored", event_id=envelope.event_id)
            elif transition.rejection is not None:
                log.info(
                    "message ignored",
                    event_id=envelope.event_id,
                    payload=envelope.WhichOneof("payload"),
                    reason=transition.rejection.message,
                )
            else:
                log.info(
                    "message applied",
                    event_id=envelope.event_id,
                    payload=envelope.WhichOneof("payload"),
                    events=[type(e).__name__ for e in transition.events],
                )
