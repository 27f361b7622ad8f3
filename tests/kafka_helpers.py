"""Test helpers for real Kafka: private topics and a reader that waits for messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]


def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    )
    for future in futures.values():
        future.result(timeout=30)


def private_topic(bootstrap: str, partitions: int = 3) -> str:
    name = f"test.{uuid.uuid4().hex[:12]}"
    create_topics(bootstrap, [name], partitions)
    return name


@dataclass(frozen=True)
class Record:
    key: str
    value: bytes
    partition: int
    offset: int


class TopicReader:
    """Reads a topic from the beginning, outside any consumer group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        metadata = self._consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.records: list[Record] = []

    def _poll(self) -> None:
        for message in self._consumer.consume(500, 0.05):
            if message.error() is None:
                key = message.key()
                self.records.append(
                    Record(
                        key.decode() if isinstance(key, bytes) else "",
                        message.value() or b"",
                        message.partition() or 0,
                        message.offset() or 0,
                    )
                )

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Record]:
        """Waits until at least `count` records arrived (the broker pushes; no fixed sleep)."""
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {len(self.records)} of {count} records")
            await asyncio.to_thread(self._poll)
        return self.records

    def close(self) -> None:
        self._consumer.close()
