"""The Postgres timer store passes the same TimerStore contract as the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.db import make_engine
from scheduler.adapters.store import PostgresTimerStore
from tests.contracts.timers import TimerStoreContract


class TestPostgresTimerStore(TimerStoreContract):
    @pytest.fixture
    async def timers(self, fresh_database: str) -> AsyncIterator[PostgresTimerStore]:
        engine = make_engine(fresh_database, pool_size=2)
        yield PostgresTimerStore(engine)
        await engine.dispose()
