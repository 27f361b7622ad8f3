"""Kafka adapters: an idempotent producer (the EventBus) and a concurrent, ordered consumer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from mesh import tracing
from mesh.backoff import Backoff
from mesh.errors import is_transient
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
                    message.topic,
                    key=message.key,
                    value=message.value,
                    headers=list(message.headers) if message.headers else None,
                    on_delivery=callback,
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
    # Kafka headers (trace context, mesh/tracing.py); empty when the message has none.
    headers: tuple[tuple[str, bytes], ...] = ()


Handler = Callable[[ReceivedMessage], Awaitable[None]]
_Decoded = TypeVar("_Decoded")
# Stores a message that failed for a reason other than an outage (ConsumerRunner's `park`).
Park = Callable[[ReceivedMessage, BaseException], Awaitable[None]]
ConsumerFactory = Callable[[dict[str, Any]], Consumer]


class UnreadableMessageError(ValueError):
    """A message no retry can make readable: it does not decode, or it names something this
    consumer does not know. The runner parks it (or, without a parking lot, logs and drops
    it) at once instead of retrying it."""


def decoding(
    decode: Callable[[ReceivedMessage], _Decoded | None],
    handle: Callable[[_Decoded], Awaitable[None]],
) -> Handler:
    """The one prologue of every consumer's handler: `decode` turns the message into what
    the service handles (its mapping module's job), or None for a message this consumer
    ignores (another payload on a shared topic); anything it raises makes the message
    unreadable. Only what decodes reaches `handle`, so entry points never see bytes."""

    # A plain function returning `handle`'s own coroutine, not a coroutine awaiting it: an
    # extra coroutine frame is resumed on every await of the handler (about seven per executor
    # attempt), which the executor's burst profile showed.
    def handler(message: ReceivedMessage) -> Awaitable[None]:
        try:
            decoded = decode(message)
        except UnreadableMessageError:
            raise
        except Exception as e:  # DecodeError, an unknown enum value, invalid UTF-8...
            raise UnreadableMessageError(f"{type(e).__name__}: {e}") from e
        return _ignored() if decoded is None else handle(decoded)

    return handler


async def _ignored() -> None:
    """What the handler of a message its consumer ignores awaits."""


class ConsumerFailedError(RuntimeError):
    """The Kafka consumer died (a fatal error) and could not be rebuilt: the process must exit
    so that whatever supervises it restarts it."""


def tenant_share(message: ReceivedMessage) -> str:
    """The tenant a message belongs to, from its key `tenant_id/service_call_id`
    (mesh.topics.call_key): the share for ConsumerRunner's per-tenant caps."""
    return message.key.split("/", 1)[0]


# Stands for "no consumer" while one is being replaced: callbacks compare their consumer with
# the runner's and ignore those of a consumer that is gone.
_CLOSED = cast(Consumer, object())


def _is_fatal(error: KafkaError) -> bool:
    return bool(error.fatal()) or error.code() == KafkaError._FATAL


@dataclass(slots=True)
class _Waiting:
    """A message held until its share has room; `progress` tells whether its partition is
    still assigned to this consumer when its turn comes (the same object) or not."""

    message: ReceivedMessage
    progress: PartitionProgress
    size: int


class ConsumerRunner:
    """Consumes topics and runs a handler per message, concurrently across keys and strictly in
    order within a key; commits a partition's offset only below messages that all finished.

    Offsets are committed after handling, so delivery is at least once; handlers dedupe.

    No input may stop the consumer: a handler failure that `is_transient` calls an outage
    (Postgres or Kafka away) is retried with backoff for as long as it lasts, since the same
    message will succeed later; any other failure is retried `max_tries` times, then the
    message is parked (or, without `park`, logged and dropped) and its key and partition
    move on.

    No consumer death goes unnoticed: a fatal librdkafka error (e.g. a static member fenced
    after a broker restart) makes the runner close that consumer and build a new one with the
    same configuration; `healthy` is False (and `on_health(False)` is called) until the new
    one is assigned partitions, and `run` raises ConsumerFailedError if that fails repeatedly.

    Fair sharing (optional): with `share_of` (e.g. `tenant_share`), a share may have at most
    `max_in_flight_per_share` handlers (and `max_bytes_per_share` bytes) running; its further
    messages wait in its own FIFO queue without taking a global slot, so one tenant at its cap
    never stops the others'. `share_of` must map every message of a key to the same share.
    Waiting messages still count toward `max_bytes_in_flight`, and at most `max_waiting` of
    them are held: past either, polling stops for everyone, which keeps memory bounded.
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
        *,
        park: Park | None = None,
        max_tries: int = 5,
        share_of: Callable[[ReceivedMessage], str] | None = None,
        max_in_flight_per_share: int | None = None,
        max_bytes_per_share: int | None = None,
        max_waiting: int | None = None,
        on_health: Callable[[bool], None] | None = None,
        max_rebuilds: int = 5,
        consumer_factory: ConsumerFactory = Consumer,
        cancel_on_revoke: bool = False,
        idle_wait_s: float = 0.05,
    ) -> None:
        # How long one wait for a message blocks the consumer's thread when none is fetched:
        # how often an idle runner looks at stopping and committing, not a delay (a message
        # that arrives ends the wait).
        self._idle_wait_s = idle_wait_s
        # Static membership (a stable `group.instance.id` per replica): a restarted process
        # gets its partitions back at once instead of after the session timeout, which is
        # most of the delay of calls held by a process that was restarted.
        static = {"group.instance.id": group_instance_id} if group_instance_id else {}
        self._config: dict[str, Any] = {
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
            # A subscribed topic that does not exist yet (on Kubernetes the topics Job races
            # the services' start) is found at the next metadata refresh: within 10 s, not
            # librdkafka's default 5 min, during which the consumer has no partitions.
            "topic.metadata.refresh.interval.ms": 10000,
            "error_cb": self._on_error,
        }
        self._factory = consumer_factory
        self._consumer = consumer_factory(self._config)
        # Handlers still running for a partition this member no longer owns are cancelled
        # (the executor: the new owner is sent the same attempts, and a held copy performed
        # here as well would reach the target twice). Off by default: the other services'
        # handlers are quick and dedupe, so letting them finish costs nothing.
        self._cancel_on_revoke = cancel_on_revoke
        self._partition_of: dict[asyncio.Task[None], tuple[str, int]] = {}
        self._group_id = group_id
        self._topics = list(topics)
        self._handler = handler
        self._ordered = ordered_by_key
        self._max_in_flight = max_in_flight
        self._progress: dict[tuple[str, int], PartitionProgress] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Set whenever a handler finishes: wakes a run loop waiting for room (back-pressure)
        # without registering a callback on every held task, as asyncio.wait would each time.
        self._room = asyncio.Event()
        # Message bytes held by unfinished handlers and waiting messages, and the cap on them:
        # a count alone bounds memory only by count × the largest message. Polled messages
        # wait in the backlog until both caps leave room; the loop polls again only once it
        # is empty.
        self._max_bytes = max_bytes_in_flight
        self._held_bytes = 0
        self._sizes: dict[asyncio.Task[None], int] = {}
        self._backlog: collections.deque[Message] = collections.deque()
        self._commit_interval = commit_interval_s
        self._last_commit = 0.0
        self._thread = self._new_thread()
        self._stopping = asyncio.Event()
        self.assigned = asyncio.Event()
        # Poison handling.
        self._park = park
        self._max_tries = max(1, max_tries)
        # Fair sharing.
        self._share_of = share_of
        self._share_cap = max_in_flight_per_share
        self._share_bytes_cap = max_bytes_per_share
        self._max_waiting = max_waiting if max_waiting is not None else 4 * max_in_flight
        self._shares: dict[asyncio.Task[None], str] = {}
        self._share_running: dict[str, int] = {}
        self._share_bytes: dict[str, int] = {}
        self._waiting: dict[str, collections.deque[_Waiting]] = {}
        self._waiting_count = 0
        # Set (from librdkafka's thread or the loop) when a rebalance dropped partitions, so
        # the loop drops their waiting messages.
        self._assignment_changed = False
        # Consumer health.
        self._fatal: KafkaError | None = None
        self._healthy = True
        self._on_health = on_health
        self._max_rebuilds = max_rebuilds
        self._rebuilds_in_a_row = 0
        self.rebuilds = 0

    @property
    def healthy(self) -> bool:
        """False from a fatal consumer error until a new consumer is assigned partitions."""
        return self._healthy

    @property
    def waiting(self) -> int:
        """Messages held until their share has room (not yet handed to a handler)."""
        return self._waiting_count

    def _new_thread(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self._group_id}-consume")

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        # librdkafka's consumer is not thread-safe: every call goes through one thread.
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _set_healthy(self, healthy: bool) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if self._on_health is not None:
            self._on_health(healthy)

    # librdkafka's callbacks run on whichever thread calls the consumer (the consumer's
    # thread, the loop's, or a closing thread): they touch only progress (as they always
    # did), plain flags, and the loop through call_soon_threadsafe. A callback from a consumer
    # that was replaced is ignored: its partitions are no longer this runner's business.

    def _on_error(self, error: KafkaError) -> None:
        if _is_fatal(error):
            self._fatal = error
            log.error("kafka consumer fatal error", error=str(error))
        else:
            log.warning("kafka consumer error", error=str(error))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return
        for tp in partitions:
            self._progress[(tp.topic, tp.partition)] = PartitionProgress()
        self._rebuilds_in_a_row = 0
        self._loop.call_soon_threadsafe(self._assigned)

    def _assigned(self) -> None:
        self.assigned.set()
        self._set_healthy(True)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return
        # Commit what is done before another member takes over; in-flight messages will be
        # delivered again to the new owner, and handlers dedupe.
        offsets = self._commit_offsets(only={(tp.topic, tp.partition) for tp in partitions})
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as e:
                self._commit_failed(e)
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return
        # The group already gave these partitions to someone else (or fenced this member): a
        # commit now would be refused at best, and for a static member is what gets it fenced.
        # Progress is dropped; the new owner redelivers what was not committed.
        log.warning("kafka partitions lost", partitions=[str(tp) for tp in partitions])
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._progress.pop((tp.topic, tp.partition), None)
            self._committed.pop((tp.topic, tp.partition), None)
        self._assignment_changed = True
        if self._cancel_on_revoke and self._partition_of:
            gone = {(tp.topic, tp.partition) for tp in partitions}
            doomed = [t for t, where in self._partition_of.items() if where in gone]
            if doomed:
                log.warning("handlers of revoked partitions cancelled", count=len(doomed))
                # Rebalance callbacks may run on the consumer's thread: cancel on the loop's.
                for task in doomed:
                    self._loop.call_soon_threadsafe(task.cancel)

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._call(self._subscribe)
        failed = False
        try:
            while not self._stopping.is_set():
                if self._fatal is not None:
                    await self._rebuild()
                    continue
                if self._assignment_changed:
                    self._assignment_changed = False
                    self._drop_unassigned_waiting()
                budget = self._max_in_flight - len(self._tasks)
                if budget <= 0 or self._over_bytes() or self._over_waiting():
                    # Back-pressure: hold off polling (the consumer stays in the group through
                    # its background heartbeat) until some handlers finish.
                    self._room.clear()
                    await self._room.wait()
                    await self._commit_now_and_then()
                    continue
                if self._waiting:
                    self._promote_all()
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
                try:
                    batch = min(budget, 500)
                    messages: list[Message] = self._consumer.consume(batch, 0)
                    if not messages:
                        # Wait for ONE message: librdkafka's consume(n, timeout) waits out the
                        # whole timeout unless n messages come, which put 50 ms on every hop
                        # of a call due now (issue #13). What came with it is taken at once.
                        messages = await self._call(self._consumer.consume, 1, self._idle_wait_s)
                        if messages and batch > 1:
                            messages += self._consumer.consume(batch - 1, 0)
                except KafkaException as e:
                    self._consume_failed(e)
                    continue
                self._backlog.extend(messages)
                await self._dispatch_backlog()
                await self._commit_now_and_then()
        except ConsumerFailedError:
            failed = True
            raise
        finally:
            if failed:
                # The process is exiting: what the handlers were doing is redelivered.
                for task in self._tasks:
                    task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks)
            if self._fatal is None:
                await self._commit(asynchronous=False)
            self._thread.shutdown(wait=True)
            await self._close(self._consumer)

    def stop(self) -> None:
        self._stopping.set()

    def _consume_failed(self, error: KafkaException) -> None:
        kafka_error = error.args[0] if error.args else None
        if isinstance(kafka_error, KafkaError) and _is_fatal(kafka_error):
            self._fatal = kafka_error
        log.warning("kafka consume failed", error=str(error))

    async def _rebuild(self) -> None:
        """Replaces a consumer that hit a fatal error with a new one of the same config.

        The old consumer's assignment is forgotten: its backlog, waiting messages and progress
        are dropped without a commit, and handlers still running finish into that dropped
        progress, so nothing they did is committed through the new consumer; the new one
        resumes from the last committed offsets and redelivers the rest (handlers dedupe).
        Messages of a key still running keep their order: a redelivered message waits for
        the running one (`_tails` is kept).
        """
        error = self._fatal
        self._set_healthy(False)
        log.error("kafka consumer died; building a new one", error=str(error))
        old, old_thread = self._consumer, self._thread
        self._progress.clear()
        self._committed.clear()
        self._backlog.clear()
        self._drop_unassigned_waiting()
        delay = 0.5
        # Callbacks from `old` (its close revokes) are ignored from here on.
        self._consumer = _CLOSED
        old_thread.shutdown(wait=True)  # idle: every call on the consumer was awaited
        self._thread = self._new_thread()
        await self._close(old)
        while not self._stopping.is_set():
            if self._rebuilds_in_a_row >= self._max_rebuilds:
                raise ConsumerFailedError(
                    f"kafka consumer failed {self._rebuilds_in_a_row} times in a row "
                    f"without being assigned partitions; last error: {error}"
                )
            if self._rebuilds_in_a_row:
                # The previous new consumer died before it was ever assigned partitions.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay * self._rebuilds_in_a_row)
            self._rebuilds_in_a_row += 1
            self.rebuilds += 1
            self._fatal = None
            try:
                self._consumer = self._factory(self._config)
                await self._call(self._subscribe)
            except KafkaException as e:
                log.error("building a new kafka consumer failed", error=str(e))
                error = e.args[0] if e.args else None
                failed, self._consumer = self._consumer, _CLOSED
                await self._close(failed)
                continue
            log.info("new kafka consumer subscribed", topics=self._topics)
            return

    async def _close(self, consumer: Consumer, timeout: float = 10.0) -> None:
        """Closes `consumer` on a thread of its own, waiting at most `timeout`: a close that
        hangs (a broker that never answers) must not hold the runner or the process exit."""
        if consumer is _CLOSED:
            return
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not closed.done():
                closed.set_result(None)

        def close() -> None:
            try:
                consumer.close()
            except Exception as e:  # a fenced or already closed consumer
                log.warning("kafka consumer close failed", error=str(e))
            with contextlib.suppress(RuntimeError):  # the loop may be gone
                loop.call_soon_threadsafe(settle)

        threading.Thread(target=close, name=f"{self._group_id}-close", daemon=True).start()
        try:
            await asyncio.wait_for(closed, timeout)
        except TimeoutError:
            log.error("kafka consumer close timed out; abandoned", timeout_s=timeout)

    def _over_bytes(self) -> bool:
        return self._max_bytes is not None and self._held_bytes >= self._max_bytes

    def _over_waiting(self) -> bool:
        return self._waiting_count >= self._max_waiting

    async def _dispatch_backlog(self) -> None:
        """Starts handlers for backlog messages, in order, while the caps leave room."""
        started = 0
        while (
            self._backlog
            and len(self._tasks) < self._max_in_flight
            and not self._over_bytes()
            and not self._over_waiting()
        ):
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
            if _is_fatal(error):
                self._on_error(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka consume error", error=str(error))
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        progress = self._progress.get((topic, partition))
        if progress is None:
            # Not (or no longer) assigned here: its owner receives it.
            return
        raw_key = message.key()
        key = raw_key.decode() if isinstance(raw_key, bytes) else (raw_key or "")
        value = message.value()
        headers = message.headers()
        received = ReceivedMessage(
            topic,
            partition,
            offset,
            key,
            value if isinstance(value, bytes) else b"",
            # A list of (name, bytes) pairs as produced here; a null value is skipped where read.
            cast(tuple[tuple[str, bytes], ...], tuple(headers)) if headers else (),
        )
        progress.start(offset)
        size = len(received.value)
        self._held_bytes += size
        if self._share_of is None:
            self._start(received, progress, size, None)
            return
        share = self._share_of(received)
        waiting = self._waiting.get(share)
        if waiting is None and self._share_has_room(share):
            self._start(received, progress, size, share)
            return
        # FIFO per share: behind the share's earlier waiting messages (this keeps per-key
        # order, a key being in one share), without taking a global slot.
        if waiting is None:
            waiting = self._waiting[share] = collections.deque()
        waiting.append(_Waiting(received, progress, size))
        self._waiting_count += 1

    def _share_has_room(self, share: str) -> bool:
        if self._share_cap is not None and self._share_running.get(share, 0) >= self._share_cap:
            return False
        return not (
            self._share_bytes_cap is not None
            and self._share_bytes.get(share, 0) >= self._share_bytes_cap
        )

    def _start(
        self,
        received: ReceivedMessage,
        progress: PartitionProgress,
        size: int,
        share: str | None,
    ) -> None:
        previous = self._tails.get(received.key) if self._ordered else None
        task = asyncio.create_task(self._handle(received, previous, progress))
        if self._ordered:
            self._tails[received.key] = task
        self._tasks.add(task)
        self._sizes[task] = size
        if share is not None:
            self._shares[task] = share
            self._share_running[share] = self._share_running.get(share, 0) + 1
            self._share_bytes[share] = self._share_bytes.get(share, 0) + size
        if self._cancel_on_revoke:
            self._partition_of[task] = (received.topic, received.partition)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._partition_of:
            self._partition_of.pop(task, None)
        size = self._sizes.pop(task, 0)
        self._held_bytes -= size
        share = self._shares.pop(task, None) if self._shares else None
        if share is not None:
            running = self._share_running[share] - 1
            held = self._share_bytes[share] - size
            if running:
                self._share_running[share] = running
                self._share_bytes[share] = held
            else:
                del self._share_running[share]
                del self._share_bytes[share]
            if share in self._waiting:
                self._promote(share)
        self._room.set()

    def _promote(self, share: str) -> None:
        """Starts the share's waiting messages, in order, while it and the global cap have
        room; drops those whose partition was revoked meanwhile."""
        waiting = self._waiting[share]
        while waiting and len(self._tasks) < self._max_in_flight and self._share_has_room(share):
            entry = waiting.popleft()
            self._waiting_count -= 1
            message = entry.message
            if self._progress.get((message.topic, message.partition)) is not entry.progress:
                self._held_bytes -= entry.size
                continue
            self._start(message, entry.progress, entry.size, share)
        if not waiting:
            del self._waiting[share]

    def _promote_all(self) -> None:
        for share in list(self._waiting):
            if len(self._tasks) >= self._max_in_flight:
                return
            self._promote(share)

    def _drop_unassigned_waiting(self) -> None:
        for share in list(self._waiting):
            kept: collections.deque[_Waiting] = collections.deque()
            for entry in self._waiting[share]:
                message = entry.message
                if self._progress.get((message.topic, message.partition)) is entry.progress:
                    kept.append(entry)
                else:
                    self._held_bytes -= entry.size
                    self._waiting_count -= 1
            if kept:
                self._waiting[share] = kept
            else:
                del self._waiting[share]

    async def _handle(
        self,
        message: ReceivedMessage,
        previous: asyncio.Future[None] | None,
        progress: PartitionProgress,
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(previous)
        backoff: Backoff | None = None  # made on the first failure: most messages have none
        tries = 0
        while True:
            try:
                # One span per try, continuing the trace the message's headers carry.
                with tracing.consuming(
                    message.topic, message.headers, message.partition, message.offset
                ):
                    await self._handler(message)
                break
            except asyncio.CancelledError:
                raise
            except UnreadableMessageError as error:
                # Retrying cannot make it readable: straight to the parking lot.
                await self._give_up(message, error, tries=1)
                break
            except Exception as error:
                where = {
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                }
                if is_transient(error):
                    # An outage: the same message will succeed once it is over.
                    log.warning("handler failed on an outage; retrying", error=repr(error), **where)
                else:
                    tries += 1
                    if tries >= self._max_tries:
                        await self._give_up(message, error, tries)
                        break
                    log.exception("handler failed; retrying", tries=tries, **where)
                backoff = backoff or Backoff(first=0.05, ceiling=5.0)
                await asyncio.sleep(backoff.next())
        progress.finish(message.offset)
        if self._tails.get(message.key) is asyncio.current_task():
            del self._tails[message.key]

    async def _give_up(self, message: ReceivedMessage, error: BaseException, tries: int) -> None:
        """Parks a message that failed `max_tries` times or is unreadable (or logs and drops it
        without a parking lot), so that its key and partition move on."""
        where = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
        unreadable = isinstance(error, UnreadableMessageError)
        why = "unreadable message" if unreadable else "handler failed"
        if self._park is None:
            log.error(f"{why}; message dropped", tries=tries, error=repr(error), **where)
            return
        backoff = Backoff(first=0.05, ceiling=5.0)
        while True:
            try:
                await self._park(message, error)
                log.error(f"{why}; message parked", error=repr(error), **where)
                return
            except asyncio.CancelledError:
                raise
            except Exception as park_error:
                if not is_transient(park_error):
                    log.exception("parking failed; message dropped", error=repr(error), **where)
                    return
                log.warning("parking failed on an outage; retrying", error=repr(park_error))
                await asyncio.sleep(backoff.next())

    def _commit_offsets(self, only: set[tuple[str, int]] | None = None) -> list[TopicPartition]:
        offsets = []
        for (topic, partition), progress in list(self._progress.items()):
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
        consumer = self._consumer
        try:
            if asynchronous:
                await self._call(lambda: consumer.commit(offsets=offsets, asynchronous=True))
            else:
                await self._call(lambda: consumer.commit(offsets=offsets, asynchronous=False))
        except KafkaException as e:
            self._commit_failed(e)
            return
        for tp in offsets:
            self._committed[(tp.topic, tp.partition)] = tp.offset

    def _commit_failed(self, error: KafkaException) -> None:
        kafka_error = error.args[0] if error.args else None
        if isinstance(kafka_error, KafkaError) and _is_fatal(kafka_error):
            self._on_error(kafka_error)
            return
        # A commit can fail during a rebalance; the messages are redelivered and deduped.
        log.warning("offset commit failed", error=str(error))
