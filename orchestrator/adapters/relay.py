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

Why one bad row cannot stop it: the bus reports which messages of a batch were not delivered
(mesh.ports.PublishError). Every delivered row is marked at once, so it is never sent again;
a row the broker refuses for good (too large, malformed) is handed to `refuse`, which keeps a
copy, and is then marked too; only rows the broker could not take right now stay pending and
are retried after a backoff, while rows behind them keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

import psycopg
from confluent_kafka import KafkaException

from mesh import tracing
from mesh.db import libpq_url
from mesh.errors import is_transient
from mesh.logs import get_logger
from mesh.ports import EventBus, OutgoingMessage, PublishError
from orchestrator.ports import OutboxRow

log = get_logger(__name__)

NOTIFY_CHANNEL = "orchestrator_outbox"
_LEADER_LOCK = 0x5E_0001  # advisory lock key owned by the relay

# Takes an outbox row the broker refused for good and why; it must keep a copy of the row (it
# is marked published, so never read again, right after this returns). It may be called again
# for the same row if the relay stops between the two, so it should be idempotent by `row.id`.
Refuse = Callable[[OutboxRow, str], Awaitable[None]]

# How long the orchestrator's inbox remembers an applied event id. Kafka redelivers a message
# when an offset was not committed (a crash, a rebalance): within seconds or minutes. A week
# also covers a consumer group reset to the earliest offset, as it matches Kafka's default log
# retention (7 days): no message older than that can come back.
INBOX_RETENTION = timedelta(days=7)


class PostgresOutbox:
    """The relay's view of the outbox table (the Outbox port)."""

    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self._conn = conn

    async def pending(self, limit: int) -> list[OutboxRow]:
        cur = await self._conn.execute(
            "SELECT id, topic, key, payload, trace_context FROM orchestrator.outbox"
            " WHERE published_at IS NULL ORDER BY id LIMIT %s",
            (limit,),
        )
        rows = await cur.fetchall()
        return [
            OutboxRow(
                int(str(r[0])),
                OutgoingMessage(
                    str(r[1]),
                    str(r[2]),
                    bytes(r[3]),  # type: ignore[call-overload]
                    # NULL for rows written without a trace (or before migration 0008).
                    tracing.headers_from_carrier(r[4]),  # type: ignore[arg-type]
                ),
            )
            for r in rows
        ]

    async def mark_published(self, ids: list[int]) -> None:
        await self._conn.execute(
            "UPDATE orchestrator.outbox SET published_at = now() WHERE id = ANY(%s)", (ids,)
        )

    async def prune(self, older_than: timedelta, limit: int | None = None) -> int:
        """Deletes up to `limit` rows published more than `older_than` ago (all when None)."""
        cur = await self._conn.execute(
            "DELETE FROM orchestrator.outbox WHERE id IN ("
            " SELECT id FROM orchestrator.outbox"
            " WHERE published_at IS NOT NULL AND published_at <= now() - %s LIMIT %s)",
            (older_than, limit),
        )
        return cur.rowcount


async def prune_inbox(
    conn: psycopg.AsyncConnection[tuple[object, ...]], older_than: timedelta, limit: int
) -> int:
    """Forgets up to `limit` applied event ids received more than `older_than` ago."""
    cur = await conn.execute(
        "DELETE FROM orchestrator.inbox WHERE event_id IN ("
        " SELECT event_id FROM orchestrator.inbox WHERE received_at <= now() - %s LIMIT %s)",
        (older_than, limit),
    )
    return cur.rowcount


class OutboxRelay:
    def __init__(
        self,
        database_url: str,
        bus: EventBus,
        refuse: Refuse,
        batch_size: int = 500,
        idle_poll: float = 1.0,
        retention: timedelta = timedelta(hours=1),
        inbox_retention: timedelta = INBOX_RETENTION,
        prune_interval: float = 60.0,
        prune_batch: int = 1000,
    ) -> None:
        self._url = libpq_url(database_url)
        self._bus = bus
        self._refuse = refuse
        self._batch_size = batch_size
        self._idle_poll = idle_poll
        self._retention = retention
        self._inbox_retention = inbox_retention
        self._prune_interval = prune_interval
        self._prune_batch = prune_batch
        self.published = 0
        self.refused = 0
        self.pruned = 0

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                await self._run_once(stop)
            except (psycopg.OperationalError, OSError, KafkaException) as e:
                # Nothing unmarked was lost: start over from the oldest unpublished row once
                # Postgres or Kafka answers again.
                log.warning("outbox relay interrupted; retrying", error=str(e), retry_in_s=delay)
                await _pause(stop, delay)
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
            loop = asyncio.get_running_loop()
            next_prune = loop.time()
            retry_delay = 0.1
            while not stop.is_set():
                # On a clock, not only when idle: a relay that always finds rows must prune too.
                if loop.time() >= next_prune:
                    more = await self._prune(conn, outbox)
                    # A full batch means more are due: take the next one after the next publish,
                    # so a large backlog is deleted in short statements between batches.
                    next_prune = loop.time() + (0 if more else self._prune_interval)
                rows = await outbox.pending(self._batch_size)
                if not rows:
                    await self._wait_for_notify(conn, stop)
                    continue
                if await self._publish(outbox, rows):
                    retry_delay = 0.1
                else:
                    await _pause(stop, retry_delay)
                    retry_delay = min(retry_delay * 2, 10.0)

    async def _publish(self, outbox: PostgresOutbox, rows: list[OutboxRow]) -> bool:
        """Publishes `rows`; marks what was delivered or refused. False when some must wait."""
        # A PRODUCER span per row that carries a trace; its headers then name that span.
        spans = tracing.ProducerSpans("servicecall.relay publish", [row.message for row in rows])
        try:
            await self._bus.publish(spans.messages)
        except PublishError as failed:
            undelivered = {u.index: u for u in failed.undelivered}
        except BaseException:
            spans.end(failed=range(len(rows)))
            raise
        else:
            undelivered = {}
        spans.end(failed=undelivered)
        delivered = [row.id for i, row in enumerate(rows) if i not in undelivered]
        if delivered:
            await outbox.mark_published(delivered)
            self.published += len(delivered)
        waiting = 0
        for index, failure in undelivered.items():
            row = rows[index]
            if not failure.refused:
                waiting += 1
                # An outage is expected and passes; anything else (a missing topic, a denied
                # write) needs an operator, while the rows behind it keep flowing.
                report = log.warning if is_transient(failure.error) else log.error
                report(
                    "outbox row not delivered; will retry",
                    outbox_id=row.id,
                    topic=row.message.topic,
                    key=row.message.key,
                    error=str(failure.error),
                )
                continue
            log.error(
                "broker refused outbox row; setting it aside",
                outbox_id=row.id,
                topic=row.message.topic,
                key=row.message.key,
                bytes=len(row.message.value),
                error=str(failure.error),
            )
            try:
                await self._refuse(row, str(failure.error))
            except Exception as e:
                waiting += 1
                log.error(
                    "could not set a refused outbox row aside", outbox_id=row.id, error=str(e)
                )
                continue
            await outbox.mark_published([row.id])
            self.refused += 1
        return waiting == 0

    async def _prune(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], outbox: PostgresOutbox
    ) -> bool:
        """One bounded delete per table (short, so it holds no lock for long); True when a
        table had a full batch to delete, i.e. probably more."""
        outbox_rows = await outbox.prune(self._retention, self._prune_batch)
        inbox_rows = await prune_inbox(conn, self._inbox_retention, self._prune_batch)
        self.pruned += outbox_rows + inbox_rows
        if outbox_rows or inbox_rows:
            log.info("pruned outbox and inbox", outbox_rows=outbox_rows, inbox_rows=inbox_rows)
        return max(outbox_rows, inbox_rows) >= self._prune_batch

    async def _lead(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], stop: asyncio.Event
    ) -> bool:
        """Blocks until this relay holds the leader lock (or stop is asked)."""
        while not stop.is_set():
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_LEADER_LOCK,))
            row = await cur.fetchone()
            if row is not None and row[0]:
                return True
            await _pause(stop, 2.0)
        return False

    async def _wait_for_notify(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], stop: asyncio.Event
    ) -> None:
        # A NOTIFY sent in the writing transaction arrives at its commit; the timeout is the
        # safety net for a notification lost while reconnecting.
        gen = conn.notifies(timeout=self._idle_poll, stop_after=1)
        async for _ in gen:
            break


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
