"""The Kafka EventBus and the Postgres Outbox pass the same contracts as their fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from mesh.kafka import KafkaEventBus
from mesh.ports import OutgoingMessage
from meshctl.layout import Layout
from orchestrator.adapters.relay import PostgresOutbox
from tests.contracts.bus import EventBusContract, ReadBack
from tests.contracts.outbox import Append, OutboxContract
from tests.kafka_helpers import TopicReader, private_topic


class TestKafkaEventBus(EventBusContract):
    @pytest.fixture
    async def bus(self, infra: Layout) -> AsyncIterator[KafkaEventBus]:
        bus = KafkaEventBus(infra.kafka_bootstrap, "contract")
        await bus.start()
        yield bus
        await bus.close()

    @pytest.fixture
    def topic(self, infra: Layout) -> str:
        return private_topic(infra.kafka_bootstrap)

    @pytest.fixture
    def read_back(self, infra: Layout) -> ReadBack:
        async def read(topic: str, count: int) -> list[tuple[str, bytes]]:
            reader = TopicReader(infra.kafka_bootstrap, topic)
            try:
                records = await reader.wait_for(count)
            finally:
                reader.close()
            return [(r.key, r.value) for r in records]

        return read


class TestPostgresOutbox(OutboxContract):
    @pytest.fixture
    async def connection(
        self, fresh_database: str
    ) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
        async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as conn:
            yield conn

    @pytest.fixture
    def outbox(self, connection: psycopg.AsyncConnection[tuple[object, ...]]) -> PostgresOutbox:
        return PostgresOutbox(connection)

    @pytest.fixture
    def append(self, connection: psycopg.AsyncConnection[tuple[object, ...]]) -> Append:
        async def add(messages: list[OutgoingMessage]) -> None:
            for m in messages:
                await connection.execute(
                    "INSERT INTO orchestrator.outbox (topic, key, payload) VALUES (%s, %s, %s)",
                    (m.topic, m.key, m.value),
                )

        return add
