"""Consumes the orchestrator's own call events: each `completed` summary makes the finished
call's completion callbacks (orchestrator/service_layer/callbacks.py), in a consumer group of
its own so that it never holds up the facts the orchestrator applies."""

from __future__ import annotations

from collections.abc import Awaitable

from mesh.kafka import ReceivedMessage, decoding
from orchestrator.mapping import decode_completion
from orchestrator.ports import Completion
from orchestrator.service_layer.callbacks import Callbacks


class CompletionHandler:
    """The callback consumer's handler: decodes a message (one that does not decode is parked
    at once, mesh.kafka.decoding; the topic's other payloads are skipped) and makes the
    callbacks of the call it reports finished."""

    def __init__(self, callbacks: Callbacks) -> None:
        self._callbacks = callbacks
        self._handler = decoding(decode_completion, self.apply)

    def __call__(self, message: ReceivedMessage) -> Awaitable[None]:
        return self._handler(message)

    async def apply(self, completion: Completion) -> None:
        await self._callbacks.call_back(
            completion.tenant_id, completion.service_call_id, completion.correlation_id
        )
