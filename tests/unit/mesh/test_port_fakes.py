"""The in-memory fakes and the pure real adapters pass their port contracts."""

from __future__ import annotations

import pytest

from mesh.clock import SystemClock, Uuid7Gen
from mesh.ports import Clock, IdGen
from tests.contracts.bus import EventBusContract, ReadBack
from tests.contracts.clock import ClockContract, IdGenContract
from tests.contracts.outbox import Append, OutboxContract
from tests.fakes.bus import InMemoryEventBus
from tests.fakes.clock import FakeClock, SeqIds
from tests.fakes.outbox import InMemoryOutbox


class TestInMemoryEventBus(EventBusContract):
    @pytest.fixture
    def bus(self) -> InMemoryEventBus:
        return InMemoryEventBus(max_message_bytes=1024)

    @pytest.fixture
    def too_large(self) -> int:
        return 2048

    @pytest.fixture
    def topic(self) -> str:
        return "topic"

    @pytest.fixture
    def read_back(self, bus: InMemoryEventBus) -> ReadBack:
        async def read(topic: str, count: int) -> list[tuple[str, bytes]]:
            return bus.on(topic)

        return read


class TestInMemoryOutbox(OutboxContract):
    @pytest.fixture
    def outbox(self) -> InMemoryOutbox:
        return InMemoryOutbox()

    @pytest.fixture
    def append(self, outbox: InMemoryOutbox) -> Append:
        async def add(messages):  # type: ignore[no-untyped-def]
            outbox.append(messages)

        return add


@pytest.fixture(params=["system", "fake"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return SystemClock() if request.param == "system" else FakeClock()


@pytest.fixture(params=["uuid7", "seq"])
def ids(request: pytest.FixtureRequest) -> IdGen:
    return Uuid7Gen() if request.param == "uuid7" else SeqIds()


class TestClocks(ClockContract):
    pass


class TestIdGens(IdGenContract):
    pass
