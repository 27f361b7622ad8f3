"""The in-memory queue store passes the QueueStore contract."""

from __future__ import annotations

import pytest

from tests.contracts.queues import Harness, QueueStoreContract
from tests.fakes.clock import FakeClock
from tests.fakes.queues import InMemoryQueueConfigs, InMemoryQueueStore
from tests.fakes.store import InMemoryServiceCallStore
from tests.services import orchestrator_over


class TestInMemoryQueueStore(QueueStoreContract):
    @pytest.fixture
    def harness(self) -> Harness:
        calls = InMemoryServiceCallStore()
        store = InMemoryQueueStore(calls)
        configs = InMemoryQueueConfigs(store)
        clock = FakeClock()
        return Harness(store, orchestrator_over(calls, clock, configs), configs, clock)
