"""The fake EventQueue passes the same contract as the Kafka adapter."""

from __future__ import annotations

import pytest

from tests.contracts.event_queue import EventQueueContract, ReadBack
from tests.fakes.executor.ports import FakeBus


class TestFakeEventQueue(EventQueueContract):
    @pytest.fixture
    def queue(self) -> FakeBus:
        return FakeBus()

    @pytest.fixture
    def topic(self) -> str:
        return "t.queue"

    @pytest.fixture
    def read_back(self, queue: FakeBus) -> ReadBack:
        async def read(topic: str, count: int) -> list[tuple[str, bytes]]:
            return [(m.key, m.value) for m in queue.published if m.topic == topic][:count]

        return read
