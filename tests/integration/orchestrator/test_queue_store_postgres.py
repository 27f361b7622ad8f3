"""The Postgres queue store passes the same QueueStore contract as the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from mesh.db import make_engine
from orchestrator.adapters.queues import PostgresQueueStore, StoredQueueConfigs
from orchestrator.adapters.store import PostgresServiceCallStore
from tests.contracts.queues import Harness, QueueStoreContract
from tests.fakes.clock import FakeClock
from tests.services import orchestrator_over


class TestPostgresQueueStore(QueueStoreContract):
    @pytest.fixture
    async def harness(self, fresh_database: str) -> AsyncIterator[Harness]:
        # A database of its own: a claim takes every tenant's held calls, and a running
        # mesh's dispatcher must never see these.
        engine = make_engine(fresh_database, pool_size=6)
        calls = PostgresServiceCallStore(engine)
        store = PostgresQueueStore(engine)
        configs = StoredQueueConfigs(store, timedelta(0))
        clock = FakeClock()
        yield Harness(store, orchestrator_over(calls, clock, configs), configs, clock)
        await calls.close()
        await engine.dispose()
