"""The Kafka EventBus and the Postgres Outbox pass the same contracts as their fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from mesh.kafka import MAX_MESSAGE_BYTES, KafkaEventBus
from mesh.ports import OutgoingMessage, PublishError
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

    @pytest.fixture
    def too_large(self) -> int:
        return 2 * MAX_MESSAGE_BYTES  # refused by the producer itself, before it is sent


async def test_a_message_the_broker_refuses_fails_alone(infra: Layout) -> None:
    """The producer lets it go; the broker's topic limit refuses it, and with it the whole record
    batch it travelled in: reported for that message only (its neighbours delivered), and the
    idempotent producer goes on delivering (no fatal error, no stall)."""
    topic = private_topic(infra.kafka_bootstrap)
    admin = AdminClient({"bootstrap.servers": infra.kafka_bootstrap})
    limit = ConfigEntry("max.message.bytes", "65536", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[limit])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    bus = KafkaEventBus(infra.kafka_bootstrap, "contract-broker-refusal")
    await bus.start()
    reader = TopicReader(infra.kafka_bootstrap, topic)
    try:
        with pytest.raises(PublishError) as failed:
            await bus.publish(
                [
                    OutgoingMessage(topic, "a/1", b"before"),
                    OutgoingMessage(topic, "a/1", b"x" * 200_000),
                    OutgoingMessage(topic, "b/2", b"after"),
                ]
            )
        [undelivered] = failed.value.undelivered
        assert (undelivered.index, undelivered.refused) == (1, True)
        await bus.publish([OutgoingMessage(topic, "a/1", b"later")])
        records = await reader.wait_for(3)
    finally:
        reader.close()
        await bus.close()
    assert sorted(r.value for r in records) == [b"after", b"before", b"later"]


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
