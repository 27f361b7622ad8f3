"""The Postgres schedule store passes the same ScheduleStore contract as the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.db import make_engine
from orchestrator.adapters.schedules import PostgresScheduleStore
from tests.contracts.schedules import ScheduleStoreContract


class TestPostgresScheduleStore(ScheduleStoreContract):
    @pytest.fixture
    async def store(self, fresh_database: str) -> AsyncIterator[PostgresScheduleStore]:
        # A database of its own: a claim takes every tenant's due schedules, and a running
        # mesh's materialiser must never see these.
        engine = make_engine(fresh_database, pool_size=4)
        yield PostgresScheduleStore(engine)
        await engine.dispose()
