"""The in-memory schedule store passes the ScheduleStore contract."""

from __future__ import annotations

import pytest

from tests.contracts.schedules import ScheduleStoreContract
from tests.fakes.schedules import InMemoryScheduleStore


class TestInMemoryScheduleStore(ScheduleStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryScheduleStore:
        return InMemoryScheduleStore()
