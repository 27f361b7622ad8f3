"""The parking lot over Postgres: messages and outbox rows that could not be handled.

Writes are async (the consumer and the relay park); the operator's side (list, replay) is
sync for the admin CLI. Replay puts the parked payload back into the outbox in the same
transaction that marks it replayed, so the relay publishes it again to its topic like any
other row: no second Kafka producer, and a replay is never lost or doubled by a crash.
"""

from __future__ import annotations

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import libpq_url
from orchestrator.adapters.relay import NOTIFY_CHANNEL
from orchestrator.adapters.tables import parked_messages
from orchestrator.ports import ParkedItem, ParkedRow

# An error text is kept for people, bounded so a huge exception message cannot bloat a row.
MAX_ERROR_CHARS = 2000


class PostgresParkingLot:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def park(self, item: ParkedItem) -> int:
        """Keeps the item once (a retried park finds the first copy); returns its id."""
        c = parked_messages.c
        async with self._engine.begin() as conn:
            inserted = await conn.execute(
                pg_insert(parked_messages)
                .values(
                    source=item.source,
                    topic=item.topic,
                    kafka_partition=item.kafka_partition,
                    kafka_offset=item.kafka_offset,
                    outbox_id=item.outbox_id,
                    key=item.key,
                    payload=item.payload,
                    error=item.error[:MAX_ERROR_CHARS],
                    tenant_id=item.tenant_id,
                    service_call_id=item.service_call_id,
                )
                .on_conflict_do_nothing()
                .returning(c.id)
            )
            parked_id = inserted.scalar_one_or_none()
            if parked_id is not None:
                return int(parked_id)
            if item.outbox_id is not None:
                same = c.outbox_id == item.outbox_id
            else:
                same = sa.and_(
                    c.source == item.source,
                    c.topic == item.topic,
                    c.kafka_partition == item.kafka_partition,
                    c.kafka_offset == item.kafka_offset,
                )
            return int((await conn.execute(sa.select(c.id).where(same))).scalar_one())


class ParkingAdmin:
    """What `python -m orchestrator admin parked ...` does."""

    def __init__(self, database_url: str) -> None:
        self._url = libpq_url(database_url)

    def list(self, include_replayed: bool = False, limit: int = 100) -> list[ParkedRow]:
        where = "" if include_replayed else " WHERE replayed_at IS NULL"
        with psycopg.connect(self._url) as conn:
            rows = conn.execute(
                "SELECT id, topic, key, payload, error, source, tenant_id, service_call_id,"
                " kafka_partition, kafka_offset, outbox_id, parked_at, replayed_at"
                f" FROM orchestrator.parked_messages{where} ORDER BY id LIMIT %s",
                (limit,),
            ).fetchall()
        return [
            ParkedRow(
                id=r[0],
                item=ParkedItem(
                    topic=r[1],
                    key=r[2],
                    payload=bytes(r[3]),
                    error=r[4],
                    source=r[5],
                    tenant_id=r[6],
                    service_call_id=r[7],
                    kafka_partition=r[8],
                    kafka_offset=r[9],
                    outbox_id=r[10],
                ),
                parked_at=r[11],
                replayed_at=r[12],
            )
            for r in rows
        ]

    def replay(self, parked_id: int) -> bool:
        """Publishes a parked message again (through the outbox); False if it is unknown or
        was already replayed."""
        with psycopg.connect(self._url) as conn:
            row = conn.execute(
                "UPDATE orchestrator.parked_messages SET replayed_at = now()"
                " WHERE id = %s AND replayed_at IS NULL RETURNING topic, key, payload",
                (parked_id,),
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                "INSERT INTO orchestrator.outbox (topic, key, payload) VALUES (%s, %s, %s)", row
            )
            conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
        return True
