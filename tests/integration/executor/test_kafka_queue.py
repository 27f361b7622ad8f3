"""The Kafka EventQueue passes the same contract as the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from executor.adapters.kafka_queue import KafkaEventQueue
from meshctl.layout import Layout
from tests.contracts.event_queue import EventQueueContract, ReadBack
from tests.kafka_helpers import TopicReader, private_topic

pytestmark = pytest.mark.integration


class TestKafkaEventQueue(EventQueueContract):
    @pytest.fixture
    async def queue(self, infra: Layout) -> AsyncIterator[KafkaEventQueue]:
        queue = KafkaEventQueue(infra.kafka_bootstrap, "queue-contract", linger_ms=0)
        await queue.start()
        yield queue
        await queue.close()

    @pytest.fixture
    def topic(self, infra: Layout) -> str:
        return private_topic(infra.kafka_bootstrap, partitions=1)

    @pytest.fixture
    def read_back(self, infra: Layout) -> ReadBack:
        async def read(topic: str, count: int) -> list[tuple[str, bytes]]:
            reader = TopicReader(infra.kafka_bootstrap, topic)
            try:
                records = await reader.wait_for(count)
            finally:
                reader.close()
            return [(r.key, r.value) for r in records]

        return read
