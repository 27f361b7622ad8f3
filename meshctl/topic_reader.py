"""Reads what a Kafka topic holds now, outside any consumer group (tests and benches)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, TopicPartition


def read_whole_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[bytes]:
    """Every message the topic holds now: read up to each partition's high watermark."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        positions = dict.fromkeys(partitions, 0)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while any(positions[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: could not read to the end in {timeout:.0f} s")
            for message in consumer.consume(1000, 0.1):
                if message.error() is None:
                    values.append(message.value() or b"")
                    positions[message.partition() or 0] = (message.offset() or 0) + 1
        return values
    finally:
        consumer.close()
