"""Kafka adapters: an idempotent producer (the EventBus) and a concurrent, ordered consumer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from mesh.logs import get_logger
from mesh.offsets import PartitionProgress
from mesh.ports import OutgoingMessage, PublishError, Undelivered

log = get_logger(__name__)

# Messages started per event-loop pass (ConsumerRunner.run).
DISPATCH_CHUNK = 16


# The largest message (key, value and record overhead) the mesh's producers send: librdkafka's
# `message.max.bytes`. Brokers are configured to accept a little more (scripts/infra/kafka.sh,
# k8s/overlays/kind/kafka.yaml), so what the producer accepts the broker never refuses for its
# size; the orchestrator refuses at submit any call whose execution request would not fit
# (orchestrator/domain/validation.py, docs/operations.md).
MAX_MESSAGE_BYTES = 1024 * 1024

# Errors that are about the message itself, not the broker's health: sending the same message
# again gets the same answer, so a caller must set it aside instead of retrying it.
REFUSED_MESSAGE_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
    }
)


def is_refused(error: BaseException | None) -> bool:
    """True when `error` says the broker (or the producer, on its behalf) refuses the message."""
    if not isinstance(error, KafkaException) or not error.args:
        return False
    kafka_error = error.args[0]
    return isinstance(kafka_error, KafkaError) and kafka_error.code() in REFUSED_MESSAGE_ERRORS


class KafkaEventBus:
    """Publishes with the idempotent producer (acks=all), so retries never duplicate or reorder
    messages of one partition; `publish` returns once every message is acknowledged, or raises
    PublishError naming the messages that were not, once all the others are."""

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        linger_ms: float = 1.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": client_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": linger_ms,
                "socket.nagle.disable": True,
                # Set, not left to librdkafka's default (1,000,000): the submit-time check and
                # the broker's limit are both derived from this number.
                "message.max.bytes": max_message_bytes,
            }
        )
        self._poller: asyncio.Task[None] | None = None
        self._closing = False
        # One thread polls delivery reports; callbacks run on it and hop back to the loop.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{client_id}-poll")

    async def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_forever())

    async def _poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await loop.run_in_executor(self._thread, self._producer.poll, 0.05)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for message in messages:
            future: asyncio.Future[None] = loop.create_future()
            futures.append(future)
            try:
                self._produce(message, self._on_delivery(loop, future))
            except KafkaException as error:
                # Refused before it left (e.g. larger than message.max.bytes): the messages
                # around it are still sent, and their reports awaited, so the caller learns
                # exactly which ones went.
                future.set_exception(error)
        # Every future settles: librdkafka reports each produced message, at the latest when
        # its message.timeout.ms runs out.
        results = await asyncio.gather(*futures, return_exceptions=True)
        if len(messages) > 1:
            # The broker judges a whole record batch: one message over a topic's limit fails
            # every message batched with it, all reported as too large. Sent alone, each one
            # is judged for itself, so `refused` names only the culprit.
            for index, result in enumerate(results):
                if is_refused(result):
                    results[index] = await self._publish_alone(loop, messages[index])
        undelivered = [
            Undelivered(index, result, is_refused(result))
            for index, result in enumerate(results)
            if isinstance(result, BaseException)
        ]
        if undelivered:
            raise PublishError(undelivered)

    async def _publish_alone(
        self, loop: asyncio.AbstractEventLoop, message: OutgoingMessage
    ) -> BaseException | None:
        future: asyncio.Future[None] = loop.create_future()
        try:
            self._produce(message, self._on_delivery(loop, future))
            await future
        except KafkaException as error:
            return error
        return None

    def _produce(self, message: OutgoingMessage, callback: Callable[[Any, Any], None]) -> None:
        while True:
            try:
                self._producer.produce(
                    message.topic, key=message.key, value=message.value, on_delivery=callback
                )
                return
            except BufferError:
                # The local queue is full: let delivery reports drain it, then try again.
                self._producer.poll(0.05)

    @staticmethod
    def _on_delivery(
        loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> Callable[[Any, Any], None]:
        def settle(err: KafkaError | None, _msg: Message) -> None:
            def apply() -> None:
                if future.done():
                    return
                if err is not None:
                    future.set_exception(KafkaException(err))
                else:
                    future.set_result(None)

            loop.call_soon_threadsafe(apply)

        return settle

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._producer.flush, 10.0)
        self._closing = True
        if self._poller is not None:
            await self._poller
        self._thread.shutdown(wait=True)


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes


Handler = Callable[[ReceivedMessage], Awaitable[None]]


class ConsumerRunner:
    """Consumes topics and runs a handler per message, concurrently across keys and strictly in
    order within a key; commits a partition's offset only below messages that all finished.

    A handler that raises is retried with backoff rather than skipped: skipping would lose a
    fact, and a message that can never be handled is the handler's to log and drop. Offsets are
    committed after handling, so delivery is at least once; handlers dedupe.
    """

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        max_in_flight: int = 256,
        ordered_by_key: bool = True,
        client_id: str | None = None,
        group_instance_id: str | None = None,
        commit_interval_s: float = 0.1,
        max_bytes_in_flight: int | None = None,
    ) -> None:
        # Static membership (a stable `group.instance.id` per replica): a restarted process
        # gets its partitions back at once instead of after the session timeout, which is
        # most of the delay of calls held by a process that was restarted.
        static = {"group.instance.id": group_instance_id} if group_instance_id else {}
        self._consumer = Consumer(
            {
                **static,
                "bootstrap.servers": bootstrap,
                "group.id": group_id,
                "client.id": client_id or group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                # How long the broker may hold a fetch that found nothing; with fetch.min.bytes
                # at 1 it answers as soon as any message arrives, so this adds no latency and
                # only sets how often an idle consumer asks again: at 10 ms the broker spent
                # much of its CPU answering empty fetches.
                "fetch.wait.max.ms": 200,
                "socket.nagle.disable": True,
            }
        )
        self._topics = list(topics)
        self._handler = handler
        self._ordered = ordered_by_key
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._progress: dict[tuple[str, int], PartitionProgress] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set whenever a handler finishes: wakes a run loop waiting for room (back-pressure)
        # without registering a callback on every held task, as asyncio.wait would each time.
        self._room = asyncio.Event()
        # Message bytes held by unfinished handlers, and the cap on them: a count alone bounds
        # memory only by count × the largest message. Polled messages wait in the backlog
        # until both caps leave room; the loop polls again only once it is empty.
        self._max_bytes = max_bytes_in_flight
        self._held_bytes = 0
        self._sizes: dict[asyncio.Task[None], int] = {}
        self._backlog: collections.deque[Message] = collections.deque()
        self._commit_interval = commit_interval_s
        self._last_commit = 0.0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{group_id}-consume")
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        # librdkafka's consumer is not thread-safe: every call goes through one thread.
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._progress[(tp.topic, tp.partition)] = PartitionProgress()
        self._loop.call_soon_threadsafe(self.assigned.set)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what is done before another member takes over; in-flight messages will be
        # delivered again to the new owner, and handlers dedupe.
        offsets = self._commit_offsets(only={(tp.topic, tp.partition) for tp in partitions})
        if offsets:
            with contextlib.suppress(KafkaException):
                self._consumer.commit(offsets=offsets, asynchronous=False)
        for tp in partitions:
            self._progress.pop((tp.topic, tp.partition), None)
            self._committed.pop((tp.topic, tp.partition), None)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._call(
            lambda: self._consumer.subscribe(
                self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke
            )
        )
        try:
            while not self._stopping.is_set():
                budget = self._max_in_flight - len(self._tasks)
                if budget <= 0 or self._over_bytes():
                    # Back-pressure: hold off polling (the consumer stays in the group through
                    # its background heartbeat) until some handlers finish.
                    self._room.clear()
                    await self._room.wait()
                    await self._commit_now_and_then()
                    continue
                if self._backlog:
                    await self._dispatch_backlog()
                    await self._commit_now_and_then()
                    continue
                # What librdkafka has already fetched is taken here, without waiting (a thread
                # hop per poll was a visible share of a busy consumer's CPU); only an empty
                # queue is waited on, in the consumer's thread. The two never overlap: every
                # call on the consumer is made from this loop, one at a time. (A rebalance's
                # revoke callback, which commits synchronously, may so run on the loop's
                # thread and hold it for that round trip; rebalances are rare.)
                messages: list[Message] = self._consumer.consume(min(budget, 500), 0)
                if not messages:
                    messages = await self._call(self._consumer.consume, min(budget, 500), 0.05)
                self._backlog.extend(messages)
                await self._dispatch_backlog()
                await self._commit_now_and_then()
        finally:
            if self._tasks:
                await asyncio.wait(self._tasks)
            await self._commit(asynchronous=False)
            await self._call(self._consumer.close)
            self._thread.shutdown(wait=True)

    def stop(self) -> None:
        self._stopping.set()

    def _over_bytes(self) -> bool:
        return self._max_bytes is not None and self._held_bytes >= self._max_bytes

    async def _dispatch_backlog(self) -> None:
        """Starts handlers for backlog messages, in order, while both caps leave room."""
        started = 0
        while self._backlog and len(self._tasks) < self._max_in_flight and not self._over_bytes():
            if started and started % DISPATCH_CHUNK == 0:
                # Let the loop run what is due (timers) between chunks: each handler's first
                # step runs in the loop pass after its dispatch, so a whole poll's worth at
                # once can hold a due timer for all of them.
                await asyncio.sleep(0)
            self._dispatch(self._backlog.popleft())
            started += 1

    def _dispatch(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consume error", error=str(error))
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        raw_key = message.key()
        key = raw_key.decode() if isinstance(raw_key, bytes) else (raw_key or "")
        value = message.value()
        received = ReceivedMessage(
            topic, partition, offset, key, value if isinstance(value, bytes) else b""
        )
        progress = self._progress.setdefault((topic, partition), PartitionProgress())
        progress.start(offset)
        previous = self._tails.get(key) if self._ordered else None
        task = asyncio.create_task(self._handle(received, previous, progress))
        if self._ordered:
            self._tails[key] = task
        self._tasks.add(task)
        self._sizes[task] = len(received.value)
        self._held_bytes += len(received.value)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._held_bytes -= self._sizes.pop(task, 0)
        self._room.set()

    async def _handle(
        self,
        message: ReceivedMessage,
        previous: asyncio.Future[None] | None,
        progress: PartitionProgress,
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
        delay = 0.05
        while True:
            try:
                await self._handler(message)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "handler failed; retrying",
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        progress.finish(message.offset)
        if self._tails.get(message.key) is asyncio.current_task():
            del self._tails[message.key]

    def _commit_offsets(self, only: set[tuple[str, int]] | None = None) -> list[TopicPartition]:
        offsets = []
        for (topic, partition), progress in self._progress.items():
            if only is not None and (topic, partition) not in only:
                continue
            position = progress.committable()
            if position is None or position <= self._committed.get((topic, partition), -1):
                continue
            offsets.append(TopicPartition(topic, partition, position))
        return offsets

    async def _commit_now_and_then(self) -> None:
        """Commits asynchronously, at most once per interval: a synchronous commit after every
        poll was a broker round trip between polls, and a crash re-delivers at most an
        interval's worth of finished messages, which handlers dedupe anyway."""
        now = time.monotonic()
        if now - self._last_commit < self._commit_interval:
            return
        self._last_commit = now
        await self._commit(asynchronous=True)

    async def _commit(self, asynchronous: bool) -> None:
        offsets = self._commit_offsets()
        if not offsets:
            return
        try:
            if asynchronous:
                await self._call(lambda: self._consumer.commit(offsets=offsets, asynchronous=True))
            else:
                await self._call(lambda: self._consumer.commit(offsets=offsets, asynchronous=False))
        except KafkaException as e:
            # A commit can fail during a rebalance; the messages are redelivered and deduped.
            log.warning("offset commit failed", error=str(e))
            return
        for tp in offsets:
            self._committed[(tp.topic, tp.partition)] = tp.offset
