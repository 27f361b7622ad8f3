"""The parking lot in Postgres: park, list, replay through the outbox exactly once."""

from __future__ import annotations

import psycopg

from mesh.db import libpq_url, make_engine
from orchestrator.adapters.parking import ParkingAdmin, PostgresParkingLot
from orchestrator.ports import ParkedItem


async def test_parked_messages_are_listed_and_replayed_once(fresh_database: str) -> None:
    engine = make_engine(fresh_database, pool_size=2)
    try:
        lot = PostgresParkingLot(engine)
        first = await lot.park(
            ParkedItem(
                topic="timer-events",
                key="acme/0190",
                payload=b"\xff\x00",
                error="UnreadableMessageError: " + "x" * 5000,
                source="consumer:orchestrator",
                tenant_id="acme",
                service_call_id="0190",
                kafka_partition=2,
                kafka_offset=99,
            )
        )
        again = await lot.park(
            ParkedItem(
                topic="timer-events",
                key="acme/0190",
                payload=b"\xff\x00",
                error="parked again after a lost answer",
                source="consumer:orchestrator",
                kafka_partition=2,
                kafka_offset=99,
            )
        )
        assert again == first  # once per message
    finally:
        await engine.dispose()
    admin = ParkingAdmin(fresh_database)
    [row] = admin.list()
    assert row.id == first and row.item.payload == b"\xff\x00"
    assert (row.item.kafka_partition, row.item.kafka_offset) == (2, 99)
    assert len(row.item.error) <= 2000  # bounded, whatever the exception said

    assert admin.replay(first) is True
    assert admin.replay(first) is False  # once
    assert admin.list() == []
    assert [r.id for r in admin.list(include_replayed=True)] == [first]
    with psycopg.connect(libpq_url(fresh_database)) as conn:
        outbox = conn.execute(
            "SELECT topic, key, payload FROM orchestrator.outbox WHERE published_at IS NULL"
        ).fetchall()
    assert outbox == [("timer-events", "acme/0190", b"\xff\x00")]
