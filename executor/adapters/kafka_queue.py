"""The EventQueue port over the mesh's idempotent Kafka producer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mesh.kafka import KafkaEventBus
from mesh.ports import OutgoingMessage


class KafkaEventQueue(KafkaEventBus):
    """KafkaEventBus whose hand-over to librdkafka happens in the call itself.

    `produce()` is synchronous, so two calls made one after the other are queued in that order
    and, with the idempotent producer, land in that order on their (shared) partition even
    when the first is retried internally. Only the waiting for the acknowledgement is deferred.
    """

    def enqueue(self, messages: Sequence[OutgoingMessage]) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for message in messages:
            future: asyncio.Future[None] = loop.create_future()
            futures.append(future)
            # The same two steps as KafkaEventBus.publish, minus its await.
            self._produce(message, self._on_delivery(loop, future))
        if len(futures) == 1:
            return futures[0]  # the common case (one event at a time): no gather to pay for
        done: asyncio.Future[None] = loop.create_future()

        def settle(gathered: asyncio.Future[list[None]]) -> None:
            if done.done():
                return
            if gathered.cancelled():
                done.cancel()
            elif (error := gathered.exception()) is not None:
                done.set_exception(error)
            else:
                done.set_result(None)

        asyncio.gather(*futures).add_done_callback(settle)
        return done
