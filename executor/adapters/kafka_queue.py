"""The EventQueue port over the mesh's idempotent Kafka producer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from mesh.kafka import KafkaEventBus
from mesh.ports import OutgoingMessage

# Delivery reports settled per event-loop pass.
SETTLE_CHUNK = 32


class KafkaEventQueue(KafkaEventBus):
    """KafkaEventBus whose hand-over to librdkafka happens in the call itself.

    `produce()` is synchronous, so two calls made one after the other are queued in that order
    and, with the idempotent producer, land in that order on their (shared) partition even
    when the first is retried internally. Only the waiting for the acknowledgement is deferred.

    Delivery reports are settled in batches: the poll thread only records them, and the event
    loop settles everything one poll returned when that poll's own future completes. The base
    class wakes the loop once per message (call_soon_threadsafe), which at thousands of
    messages a second was the poll thread's largest cost (docs/executor.md).
    """

    def __init__(self, bootstrap: str, client_id: str, linger_ms: float = 1.0) -> None:
        super().__init__(bootstrap, client_id, linger_ms)
        # Appended to by librdkafka callbacks on the poll thread, drained on the loop. Always
        # this one list (callbacks hold it): appends go to its end and the loop deletes only
        # the prefix it read, both atomic under the GIL.
        self._reports: list[tuple[asyncio.Future[None], KafkaError | None]] = []

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

    def _on_delivery(  # type: ignore[override]
        self, _loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> Callable[[Any, Any], None]:
        reports = self._reports

        def record(err: KafkaError | None, _msg: Message) -> None:
            reports.append((future, err))

        return record

    def _settle_reports(self, most: int | None = None) -> int:
        """Settles up to `most` recorded reports (all when None); returns how many are left."""
        count = len(self._reports) if most is None else min(most, len(self._reports))
        reports = self._reports[:count]
        del self._reports[:count]
        for future, err in reports:
            if future.done():
                continue
            if err is not None:
                future.set_exception(KafkaException(err))
            else:
                future.set_result(None)
        return len(self._reports)

    async def _poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await loop.run_in_executor(self._thread, self._producer.poll, 0.05)
            # A settled ack resumes its attempt in the next loop pass; a whole poll's worth at
            # once makes that pass long enough to hold a due send. In chunks, with the loop
            # free to run timers in between.
            while self._settle_reports(SETTLE_CHUNK):  # noqa: ASYNC110 - yields, not a wait
                await asyncio.sleep(0)

    async def close(self) -> None:
        await super().close()
        self._settle_reports()  # what the final flush delivered
