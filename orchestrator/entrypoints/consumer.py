"""Applies facts from the scheduler and the executor to calls, each exactly once."""

from __future__ import annotations

from collections.abc import Awaitable

from mesh.kafka import ReceivedMessage, decoding
from mesh.logs import call_context, get_logger
from orchestrator.mapping import decode_call_event
from orchestrator.ports import IncomingFact
from orchestrator.service_layer.services import Orchestrator

log = get_logger(__name__)


class CallEventHandler:
    """The consumer's handler: decodes a message (a message that does not decode is parked at
    once, mesh.kafka.decoding) and applies the fact it reports."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator
        self._handler = decoding(decode_call_event, self.apply)

    def __call__(self, message: ReceivedMessage) -> Awaitable[None]:
        return self._handler(message)

    async def apply(self, fact: IncomingFact) -> None:
        with call_context(fact.tenant_id, fact.service_call_id, fact.correlation_id):
            transition = await self._orchestrator.apply(
                fact.tenant_id,
                fact.service_call_id,
                fact.command,
                fact.event_id,
                fact.correlation_id,
            )
            if transition is None:
                log.debug("duplicate message ignored", event_id=fact.event_id)
            elif transition.rejection is not None:
                log.info(
                    "message ignored",
                    event_id=fact.event_id,
                    payload=fact.payload,
                    reason=transition.rejection.message,
                )
            else:
                log.info(
                    "message applied",
                    event_id=fact.event_id,
                    payload=fact.payload,
                    events=[type(e).__name__ for e in transition.events],
                )
