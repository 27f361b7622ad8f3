"""The Postgres store passes the same ServiceCallStore contract as the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.db import make_engine
from orchestrator.adapters.store import PostgresServiceCallStore
from tests.contracts.store import ServiceCallStoreContract


class TestPostgresServiceCallStore(ServiceCallStoreContract):
    @pytest.fixture
    async def store(self, fresh_database: str) -> AsyncIterator[PostgresServiceCallStore]:
        # A database of its own: the contract writes outbox rows that a running mesh's relay
        # must never see.
        engine = make_engine(fresh_database, pool_size=4)
        yield PostgresServiceCallStore(engine)
        await engine.dispose()
