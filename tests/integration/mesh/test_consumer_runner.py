"""ConsumerRunner against real Kafka: order within a key, concurrency across keys, offsets
committed only after handling, and a failing handler retried rather than skipped."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from confluent_kafka import Consumer, TopicPartition

from mesh.kafka import ConsumerRunner, KafkaEventBus, ReceivedMessage
from mesh.ports import OutgoingMessage
from meshctl.layout import Layout
from tests.kafka_helpers import private_topic


async def publish(bootstrap: str, messages: list[OutgoingMessage]) -> None:
    bus = KafkaEventBus(bootstrap, "runner-test")
    await bus.start()
    try:
        await bus.publish(messages)
    finally:
        await bus.close()


def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


async def test_order_per_key_and_commits_after_handling(infra: Layout) -> None:
    topic = private_topic(infra.kafka_bootstrap, partitions=3)
    group = f"g-{uuid.uuid4().hex[:8]}"
    keys = [f"t/call-{i}" for i in range(6)]
    messages = [OutgoingMessage(topic, k, f"{k}:{n}".encode()) for n in range(20) for k in keys]
    await publish(infra.kafka_bootstrap, messages)

    seen: dict[str, list[bytes]] = defaultdict(list)
    in_flight_per_key: dict[str, int] = defaultdict(int)
    max_parallel = 0
    active = 0
    failed_once: set[bytes] = set()
    done = asyncio.Event()

    async def handler(message: ReceivedMessage) -> None:
        nonlocal active, max_parallel
        if message.value.endswith(b":7") and message.value not in failed_once:
            failed_once.add(message.value)
            raise RuntimeError("transient failure: must be retried, not skipped")
        in_flight_per_key[message.key] += 1
        assert in_flight_per_key[message.key] == 1, "two messages of one key ran at once"
        active += 1
        max_parallel = max(max_parallel, active)
        await asyncio.sleep(0.001)
        seen[message.key].append(message.value)
        active -= 1
        in_flight_per_key[message.key] -= 1
        if sum(len(v) for v in seen.values()) == len(messages):
            done.set()

    runner = ConsumerRunner(infra.kafka_bootstrap, group, [topic], handler, max_in_flight=32)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(done.wait(), 60)
    runner.stop()
    await task

    for key in keys:
        assert seen[key] == [f"{key}:{n}".encode() for n in range(20)]
    assert max_parallel > 1, "different keys should be handled concurrently"
    assert committed_total(infra.kafka_bootstrap, group, topic, 3) == len(messages)
