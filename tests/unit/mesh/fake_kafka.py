"""An in-memory stand-in for confluent_kafka.Consumer, enough for ConsumerRunner's unit tests:
one topic, a shared stream of messages, rebalance callbacks and fatal errors on demand."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

RebalanceCallback = Any


class FakeBroker:
    def __init__(self, topic: str = "t", partitions: int = 1) -> None:
        self.topic = topic
        self.partitions = partitions
        self._stream: collections.deque[Message] = collections.deque()
        self._next: dict[int, int] = dict.fromkeys(range(partitions), 0)
        self._lock = threading.Lock()
        self.committed: dict[tuple[str, int], int] = {}
        self.commits: list[list[tuple[str, int, int]]] = []
        self.consumers: list[FakeConsumer] = []
        self.failing_creations = 0

    def produce(self, key: str, value: bytes, partition: int = 0) -> int:
        with self._lock:
            offset = self._next[partition]
            self._next[partition] = offset + 1
            self._stream.append(
                Message(
                    topic=self.topic,
                    partition=partition,
                    offset=offset,
                    key=key.encode(),
                    value=value,
                )
            )
        return offset

    def take(self, count: int) -> list[Message]:
        with self._lock:
            return [self._stream.popleft() for _ in range(min(count, len(self._stream)))]

    def factory(self, _config: dict[str, Any]) -> Consumer:
        if self.failing_creations > 0:
            self.failing_creations -= 1
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker unreachable"))
        consumer = FakeConsumer(self)
        self.consumers.append(consumer)
        return cast(Consumer, consumer)

    @property
    def current(self) -> FakeConsumer:
        return self.consumers[-1]


class FakeConsumer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self._actions: collections.deque[str] = collections.deque()
        self._on_assign: RebalanceCallback = None
        self._on_revoke: RebalanceCallback = None
        self._on_lost: RebalanceCallback = None
        self.live = False
        self.closed = False
        # Set once a lose/revoke/fatal asked for was served (by the runner's poll).
        self.served = threading.Event()

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.broker.topic, p) for p in range(self.broker.partitions)]

    def subscribe(
        self,
        _topics: list[str],
        on_assign: RebalanceCallback = None,
        on_revoke: RebalanceCallback = None,
        on_lost: RebalanceCallback = None,
    ) -> None:
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._actions.append("assign")

    # Test controls: each takes effect in the next consume, as librdkafka's do.
    def lose(self) -> None:
        self._actions.append("lose")

    def revoke(self) -> None:
        self._actions.append("revoke")

    def fail_fatally(self) -> None:
        self._actions.append("fatal")

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        while self._actions:
            action = self._actions.popleft()
            if action == "assign":
                self.live = True
                self._on_assign(self, self._partitions())
            elif action == "revoke":
                self.live = False
                self._on_revoke(self, self._partitions())
            elif action == "lose":
                self.live = False
                # Like librdkafka: without on_lost, a lost assignment goes to on_revoke.
                (self._on_lost or self._on_revoke)(self, self._partitions())
            elif action == "fatal":
                self.live = False
                self.served.set()
                error = KafkaError(
                    KafkaError._FATAL,
                    "Static consumer fenced by other consumer with same group.instance.id",
                    fatal=True,
                )
                return [Message(error=error)]
            if action != "assign":
                self.served.set()
        messages = self.broker.take(num_messages) if self.live else []
        if not messages and timeout > 0:
            time.sleep(min(timeout, 0.005))  # the consumer's own thread, as librdkafka waits
        return messages

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.broker.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        for tp in offsets:
            self.broker.committed[(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        if self.live and self._on_revoke is not None:
            self._on_revoke(self, self._partitions())
        self.live = False
        self.closed = True
