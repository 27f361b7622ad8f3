"""The outbox relay against real Postgres and Kafka: in order per call, nothing lost, nothing
stuck behind a row the broker refuses, and its tables pruned even while it is busy."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from mesh.kafka import MAX_MESSAGE_BYTES, KafkaEventBus
from mesh.ports import OutgoingMessage
from meshctl.layout import Layout
from orchestrator.adapters.relay import OutboxRelay
from orchestrator.ports import OutboxRow
from tests.kafka_helpers import Record, TopicReader, private_topic
from tests.waiting import eventually


class RecordRefusals:
    """The `refuse` callback of a test: remembers each row handed to it."""

    def __init__(self) -> None:
        self.rows: list[tuple[OutboxRow, str]] = []
        self.called = asyncio.Event()

    async def __call__(self, row: OutboxRow, error: str) -> None:
        self.rows.append((row, error))
        self.called.set()


async def insert_rows(url: str, topic: str, rows: list[tuple[str, bytes]]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for key, value in rows:
            await conn.execute(
                "INSERT INTO orchestrator.outbox (topic, key, payload) VALUES (%s, %s, %s)",
                (topic, key, value),
            )
        await conn.execute("NOTIFY orchestrator_outbox")


def per_key_firsts(records: list[Record]) -> dict[str, list[bytes]]:
    """Each key's values in arrival order, repeats dropped (delivery is at least once)."""
    seen: dict[str, list[bytes]] = defaultdict(list)
    for record in records:
        if record.value not in seen[record.key]:
            seen[record.key].append(record.value)
    return seen


def interleaved(calls: int, per_call: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [
        (f"tenant/call-{c}", f"{c}:{i}".encode())
        for i in range(start, start + per_call)
        for c in range(calls)
    ]


@pytest.fixture
async def bus(infra: Layout) -> AsyncIterator[KafkaEventBus]:
    bus = KafkaEventBus(infra.kafka_bootstrap, "relay-test")
    await bus.start()
    yield bus
    await bus.close()


async def test_relay_publishes_each_calls_rows_in_commit_order(
    infra: Layout, fresh_database: str, bus: KafkaEventBus
) -> None:
    topic = private_topic(infra.kafka_bootstrap)
    await insert_rows(fresh_database, topic, interleaved(5, 20))
    relay = OutboxRelay(fresh_database, bus, RecordRefusals(), batch_size=7)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    reader = TopicReader(infra.kafka_bootstrap, topic)
    try:
        records = await reader.wait_for(100)
    finally:
        stop.set()
        await task
        reader.close()
    for c, values in per_key_firsts(records).items():
        n = c.rsplit("-", 1)[1]
        assert values == [f"{n}:{i}".encode() for i in range(20)]


async def test_relay_restart_loses_and_reorders_nothing(
    infra: Layout, fresh_database: str, bus: KafkaEventBus
) -> None:
    topic = private_topic(infra.kafka_bootstrap)
    await insert_rows(fresh_database, topic, interleaved(4, 25))
    first = OutboxRelay(fresh_database, bus, RecordRefusals(), batch_size=10)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    reader = TopicReader(infra.kafka_bootstrap, topic)
    try:
        await reader.wait_for(30)
        # Killed mid-stream: cancel, not a graceful stop, so a batch may be published but not
        # yet marked; the next relay publishes it again and order per key must still hold.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await insert_rows(fresh_database, topic, interleaved(4, 25, start=25))
        second = OutboxRelay(fresh_database, bus, RecordRefusals(), batch_size=10)
        stop = asyncio.Event()
        task = asyncio.create_task(second.run(stop))
        records = await reader.wait_for(200)
        while any(len(v) < 50 for v in per_key_firsts(records).values()):
            records = await reader.wait_for(len(records) + 1)
    finally:
        stop.set()
        await task
        reader.close()
    firsts = per_key_firsts(records)
    assert len(firsts) == 4
    for c, values in firsts.items():
        n = c.rsplit("-", 1)[1]
        assert values == [f"{n}:{i}".encode() for i in range(50)]


async def test_relay_picks_up_a_row_whose_lower_id_commits_later(
    infra: Layout, fresh_database: str, bus: KafkaEventBus
) -> None:
    topic = private_topic(infra.kafka_bootstrap)
    relay = OutboxRelay(fresh_database, bus, RecordRefusals())
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    reader = TopicReader(infra.kafka_bootstrap, topic)
    try:
        async with await psycopg.AsyncConnection.connect(fresh_database) as slow:
            # Takes the lower serial id but commits last.
            await slow.execute(
                "INSERT INTO orchestrator.outbox (topic, key, payload)"
                " VALUES (%s, 'a/1', 'early-id')",
                (topic,),
            )
            await insert_rows(fresh_database, topic, [("b/2", b"late-id")])
            assert [r.value for r in await reader.wait_for(1)] == [b"late-id"]
            await slow.execute("NOTIFY orchestrator_outbox")
            await slow.commit()
        records = await reader.wait_for(2)
    finally:
        stop.set()
        await task
        reader.close()
    assert sorted(r.value for r in records) == [b"early-id", b"late-id"]


def topic_size(bootstrap: str, topic: str) -> int:
    """Records ever written to `topic` (its partitions' high watermarks: no compaction)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "size-probe"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


async def test_an_oversized_row_is_set_aside_and_rows_behind_it_flow(
    infra: Layout, fresh_database: str, bus: KafkaEventBus
) -> None:
    """Issue #12 defect 2: the broker refusing one row used to stop the relay for everyone,
    and each retry re-sent the rows ahead of it in the batch."""
    topic = private_topic(infra.kafka_bootstrap)
    oversized = b"x" * (MAX_MESSAGE_BYTES + 1)
    await insert_rows(
        fresh_database, topic, [("a/1", b"first"), ("b/2", oversized), ("c/3", b"third")]
    )
    refusals = RecordRefusals()
    relay = OutboxRelay(fresh_database, bus, refusals)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    reader = TopicReader(infra.kafka_bootstrap, topic)
    try:
        await asyncio.wait_for(refusals.called.wait(), 30)
        # A row committed after the refused one still goes out.
        await insert_rows(fresh_database, topic, [("d/4", b"later")])
        records = await reader.wait_for(3)
        # Every publish is acknowledged before its rows are marked: once all three are
        # marked, anything sent twice would already be on the topic.
        await eventually(lambda: relay.published == 3)
    finally:
        stop.set()
        await task
        reader.close()
    assert sorted(r.value for r in records) == [b"first", b"later", b"third"]
    assert topic_size(infra.kafka_bootstrap, topic) == 3  # each exactly once
    [(row, error)] = refusals.rows
    assert (row.message.key, len(row.message.value)) == ("b/2", len(oversized))
    assert "MSG_SIZE_TOO_LARGE" in error
    assert relay.refused == 1
    async with await psycopg.AsyncConnection.connect(fresh_database) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM orchestrator.outbox WHERE published_at IS NULL"
        )
        assert await cur.fetchone() == (0,)  # the refused row is never read again


async def insert_old(url: str, topic: str, inbox_ids: list[str], age: timedelta) -> None:
    """Inbox rows received, and a published outbox row published, `age` ago."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for event_id in inbox_ids:
            await conn.execute(
                "INSERT INTO orchestrator.inbox (event_id, received_at) VALUES (%s, now() - %s)",
                (event_id, age),
            )
        await conn.execute(
            "INSERT INTO orchestrator.outbox (topic, key, payload, published_at)"
            " VALUES (%s, 'old/1', 'old', now() - %s)",
            (topic, age),
        )


async def remaining(url: str) -> tuple[list[str], list[bytes]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        inbox = await conn.execute("SELECT event_id FROM orchestrator.inbox ORDER BY event_id")
        outbox = await conn.execute(
            "SELECT payload FROM orchestrator.outbox WHERE published_at IS NOT NULL"
        )
        return [str(r[0]) for r in await inbox.fetchall()], [
            bytes(r[0]) for r in await outbox.fetchall()
        ]


async def test_inbox_rows_past_their_retention_are_pruned_in_batches(
    infra: Layout, fresh_database: str, bus: KafkaEventBus
) -> None:
    """Issue #12 defect 11: the inbox was never pruned."""
    topic = private_topic(infra.kafka_bootstrap)
    await insert_old(fresh_database, topic, [f"old-{i}" for i in range(5)], timedelta(days=8))
    await insert_old(fresh_database, topic, ["fresh-0", "fresh-1"], timedelta(days=6))
    relay = OutboxRelay(
        fresh_database,
        bus,
        RecordRefusals(),
        retention=timedelta(days=7),
        inbox_retention=timedelta(days=7),
        prune_batch=2,  # five old rows: three bounded deletes
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await eventually(lambda: relay.pruned >= 6)
    finally:
        stop.set()
        await task
    inbox, outbox = await remaining(fresh_database)
    assert inbox == ["fresh-0", "fresh-1"]
    assert outbox == [b"old"]  # the one published 6 days ago; the 8-day-old one is gone
    assert relay.pruned == 6


class BusyBus:
    """The real bus, plus a new outbox row committed after each publish: the relay never
    finds the outbox empty, as under steady load."""

    def __init__(self, bus: KafkaEventBus, url: str, topic: str) -> None:
        self._bus = bus
        self._url = url
        self._topic = topic
        self.publishes = 0

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await self._bus.publish(messages)
        self.publishes += 1
        await insert_rows(self._url, self._topic, [("busy/1", f"{self.publishes}".encode())])


async def test_a_busy_relay_still_prunes(
    infra: Layout, fresh_database: str, bus: KafkaEventBus
) -> None:
    """Issue #12 defect 11: the outbox was pruned only when a poll found nothing."""
    topic = private_topic(infra.kafka_bootstrap)
    await insert_rows(fresh_database, topic, [("busy/1", b"0")])
    busy = BusyBus(bus, fresh_database, topic)
    relay = OutboxRelay(
        fresh_database,
        busy,
        RecordRefusals(),
        retention=timedelta(hours=1),
        inbox_retention=timedelta(days=7),
        prune_interval=0.2,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await eventually(lambda: busy.publishes >= 3)
        await insert_old(fresh_database, topic, ["old-inbox"], timedelta(days=8))
        before = relay.pruned
        await eventually(lambda: relay.pruned >= before + 2)
    finally:
        stop.set()
        await task
    inbox, outbox = await remaining(fresh_database)
    assert inbox == []
    assert b"old" not in outbox
    assert busy.publishes > 3  # it stayed busy all along
