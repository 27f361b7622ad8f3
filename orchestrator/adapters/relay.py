"""Outbox relay: publishes committed outbox rows to Kafka in order, then marks them published.

Why it cannot skip a row: it never reads "ids after the last one published" (a serial id is
taken at INSERT but becomes visible at COMMIT, so a lower id can appear after a higher one is
published, and a cursor would jump over it). It reads every row still unpublished, lowest id
first, so a late-committing row is simply picked up by the next batch.

Why one call's rows stay in order: the orchestrator writes a call's outbox rows while holding
that call's row lock (SELECT ... FOR UPDATE), so a later transaction of the same call takes
its serial ids only after the earlier one committed: per call, id order is commit order. Only
one relay publishes at a time (a session advisory lock), reading in id order, and the
idempotent producer keeps the order within a partition; so Kafka sees each call's messages in
commit order. Other relay replicas wait as hot standbys and take over when the lock frees.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import psycopg
from confluent_kafka import KafkaException

from mesh.db import libpq_url
from mesh.logs import get_logger
from mesh.ports import EventBus, OutgoingMessage
from orchestrator.ports import OutboxRow

log = get_logger(__name__)

NOTIFY_CHANNEL = "orchestrator_outbox"
_LEADER_LOCK = 0x5E_0001  # advisory lock key owned by the relay


class PostgresOutbox:
    """The relay's view of the outbox table (the Outbox port)."""

    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self._conn = conn

    async def pending(self, limit: int) -> list[OutboxRow]:
        cur = await self._conn.execute(
            "SELECT id, topic, key, payload FROM orchestrator.outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT %s",
            (limit,),
        )
        rows = await cur.fetchall()
        return [
            OutboxRow(int(str(r[0])), OutgoingMessage(str(r[1]), str(r[2]), bytes(r[3])))  # type: ignore[call-overload]
            for r in rows
        ]

    async def mark_published(self, ids: list[int]) -> None:
        await self._conn.execute(
            "UPDATE orchestrator.outbox SET published_at = now() WHERE id = ANY(%s)", (ids,)
        )

    async def prune(self, older_than: timedelta) -> int:
        cur = await self._conn.execute(
            "DELETE FROM orchestrator.outbox"
            " WHERE published_at IS NOT NULL AND published_at <= now() - %s",
            (older_than,),
        )
        return cur.rowcount


class OutboxRelay:
    def __init__(
        self,
        database_url: str,
        bus: EventBus,
        batch_size: int = 500,
        idle_poll: float = 1.0,
        retention: timedelta = timedelta(hours=1),
    ) -> None:
        self._url = libpq_url(database_url)
        self._bus = bus
        self._batch_size = batch_size
        self._idle_poll = idle_poll
        self._retention = retention
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                await self._run_once(stop)
            except (psycopg.OperationalError, OSError, KafkaException) as e:
                # Nothing was marked published, so nothing is lost: start over from the
                # oldest unpublished row once Postgres or Kafka answers again.
                log.warning("outbox relay interrupted; retrying", error=str(e), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
            else:
                delay = 0.1

    async def _run_once(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            if not await self._lead(conn, stop):
                return
            await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            outbox = PostgresOutbox(conn)
            log.info("outbox relay is the leader")
            last_prune = 0.0
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                rows = await outbox.pending(self._batch_size)
                if rows:
                    await self._bus.publish([row.message for row in rows])
                    await outbox.mark_published([row.id for row in rows])
                    self.published += len(rows)
                    continue
                if loop.time() - last_prune > 60:
                    await outbox.prune(self._retention)
                    last_prune = loop.time()
                await self._wait_for_notify(conn, stop)

    async def _lead(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], stop: asyncio.Event
    ) -> bool:
        """Blocks until this relay holds the leader lock (or stop is asked)."""
        while not stop.is_set():
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_LEADER_LOCK,))
            row = await cur.fetchone()
            if row is not None and row[0]:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
        return False

    async def _wait_for_notify(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], stop: asyncio.Event
    ) -> None:
        # A NOTIFY sent in the writing transaction arrives at its commit; the timeout is the
        # safety net for a notification lost while reconnecting.
        gen = conn.notifies(timeout=self._idle_poll, stop_after=1)
        async for _ in gen:
            break
