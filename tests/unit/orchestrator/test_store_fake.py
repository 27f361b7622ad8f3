"""The in-memory store passes the ServiceCallStore contract."""

from __future__ import annotations

import pytest

from tests.contracts.store import ServiceCallStoreContract
from tests.fakes.store import InMemoryServiceCallStore


class TestInMemoryServiceCallStore(ServiceCallStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryServiceCallStore:
        return InMemoryServiceCallStore()
