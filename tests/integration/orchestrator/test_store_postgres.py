"""The Postgres store passes the same ServiceCallStore contract as the fake."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.adapters.store import PostgresServiceCallStore
from tests.contracts.store import ServiceCallStoreContract


class TestPostgresServiceCallStore(ServiceCallStoreContract):
    @pytest.fixture
    def store(self, engine: AsyncEngine) -> PostgresServiceCallStore:
        return PostgresServiceCallStore(engine)
