"""The parking lot over Postgres: messages and outbox rows that could not be handled.

Writes are async (the consumer and the relay park); the operator's side (list, replay) is
sync for the admin CLI. Replay puts the parked payload back into the outbox in the same
transaction that marks it replayed, so the relay publishes it again to its topic like any
other row: no second Kafka producer, and a replay is never lost or doubled by a crash.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import sqlalchemy_url
from orchestrator.adapters.relay import NOTIFY_CHANNEL
from orchestrator.adapters.tables import outbox, parked_messages
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


def _parked_rows(include_replayed: bool) -> sa.Select[Any]:
    c = parked_messages.c
    stmt = sa.select(
        c.id,
        c.topic,
        c.key,
        c.payload,
        c.error,
        c.source,
        c.tenant_id,
        c.service_call_id,
        c.kafka_partition,
        c.kafka_offset,
        c.outbox_id,
        c.parked_at,
        c.replayed_at,
    )
    if not include_replayed:
        stmt = stmt.where(c.replayed_at.is_(None))
    return stmt.order_by(c.id).limit(sa.bindparam("limit"))


_PARKED = _parked_rows(include_replayed=False)
_PARKED_AND_REPLAYED = _parked_rows(include_replayed=True)

# Marks a parked message replayed, once: a second replay finds nothing to update.
_MARK_REPLAYED = (
    sa.update(parked_messages)
    .where(
        parked_messages.c.id == sa.bindparam("parked_id"), parked_messages.c.replayed_at.is_(None)
    )
    .values(replayed_at=sa.func.now())
    .returning(parked_messages.c.topic, parked_messages.c.key, parked_messages.c.payload)
)

_REQUEUE = sa.insert(outbox)

_WAKE_RELAY = sa.select(sa.func.pg_notify(sa.bindparam("channel", type_=sa.Text), ""))


class ParkingAdmin:
    """What `python -m orchestrator admin parked ...` does."""

    def __init__(self, database_url: str) -> None:
        # No pool: each command is one short transaction, and the CLI exits after it.
        self._engine = sa.create_engine(
            sqlalchemy_url(database_url), poolclass=sa.NullPool, hide_parameters=True
        )

    def list(self, include_replayed: bool = False, limit: int = 100) -> list[ParkedRow]:
        stmt = _PARKED_AND_REPLAYED if include_replayed else _PARKED
        with self._engine.begin() as conn:
            rows = conn.execute(stmt, {"limit": limit}).all()
        return [
            ParkedRow(
                id=r.id,
                item=ParkedItem(
                    topic=r.topic,
                    key=r.key,
                    payload=bytes(r.payload),
                    error=r.error,
                    source=r.source,
                    tenant_id=r.tenant_id,
                    service_call_id=r.service_call_id,
                    kafka_partition=r.kafka_partition,
                    kafka_offset=r.kafka_offset,
                    outbox_id=r.outbox_id,
                ),
                parked_at=r.parked_at,
                replayed_at=r.replayed_at,
            )
            for r in rows
        ]

    def replay(self, parked_id: int) -> bool:
        """Publishes a parked message again (through the outbox); False if it is unknown or
        was already replayed."""
        with self._engine.begin() as conn:
            row = conn.execute(_MARK_REPLAYED, {"parked_id": parked_id}).first()
            if row is None:
                return False
            conn.execute(_REQUEUE, {"topic": row.topic, "key": row.key, "payload": row.payload})
            conn.execute(_WAKE_RELAY, {"channel": NOTIFY_CHANNEL})
        return True
