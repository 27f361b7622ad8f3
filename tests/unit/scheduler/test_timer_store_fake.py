"""The in-memory timer store passes the TimerStore contract."""

from __future__ import annotations

import pytest

from tests.contracts.timers import TimerStoreContract
from tests.fakes.timers import InMemoryTimerStore


class TestInMemoryTimerStore(TimerStoreContract):
    @pytest.fixture
    def timers(self) -> InMemoryTimerStore:
        return InMemoryTimerStore()
