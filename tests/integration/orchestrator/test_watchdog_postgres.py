"""The watchdog over the Postgres store: the shared scenarios, replicas, the column, 0005."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

import psycopg
import pytest
from alembic import command
from alembic.config import Config

from mesh.db import make_engine, sqlalchemy_url
from mesh.ports import OutgoingMessage
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.domain.states import Dispatched, Running, Scheduled, ServiceCallState
from orchestrator.main import MIGRATIONS
from tests.contracts.watchdog import HANDOFF_BACKSTOP, TIMING, Sent, WatchdogContract, World


def outbox_of(url: str) -> Sent:
    async def sent() -> Sequence[OutgoingMessage]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(
                "SELECT topic, key, payload FROM orchestrator.outbox ORDER BY id"
            )
            return [OutgoingMessage(t, k, bytes(p)) for t, k, p in await cur.fetchall()]

    return sent


async def watchdog_at(url: str, call: ServiceCallState) -> datetime | None:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT watchdog_at FROM orchestrator.service_calls"
            " WHERE tenant_id = %s AND service_call_id = %s",
            (call.spec.tenant_id, call.spec.service_call_id),
        )
        row = await cur.fetchone()
    assert row is not None
    value: datetime | None = row[0]
    return value


async def set_watchdog_at(url: str, call: ServiceCallState, value: datetime | None) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE orchestrator.service_calls SET watchdog_at = %s"
            " WHERE tenant_id = %s AND service_call_id = %s",
            (value, call.spec.tenant_id, call.spec.service_call_id),
        )


@pytest.fixture
async def stores(fresh_database: str) -> AsyncIterator[list[PostgresServiceCallStore]]:
    """Two stores on two engines over one database: two orchestrator replicas."""
    engines = [make_engine(fresh_database, pool_size=4) for _ in range(2)]
    yield [PostgresServiceCallStore(engine) for engine in engines]
    for engine in engines:
        await engine.dispose()


class TestWatchdogOnPostgres(WatchdogContract):
    @pytest.fixture
    def world(self, stores: list[PostgresServiceCallStore], fresh_database: str) -> World:
        return World(stores[0], outbox_of(fresh_database))


async def test_two_replicas_fire_each_timer_once(
    stores: list[PostgresServiceCallStore], fresh_database: str
) -> None:
    first, second = (World(store, outbox_of(fresh_database)) for store in stores)
    calls = [await first.submit() for _ in range(20)]
    second.clock.current = first.clock.current
    for world in (first, second):
        world.clock.advance(TIMING.dispatch_lease)

    watchdogs = [w.watchdog(batch_size=8) for w in (first, second)]
    while any(await asyncio.gather(*(w.sweep() for w in watchdogs))):
        pass  # a full batch: both go again at once, as their loops would

    for call in calls:
        assert [r.attempt for r in await first.execution_requests(call)] == [1, 1]
        state = await first.state(call)
        assert isinstance(state, Dispatched) and state.version == call.version + 2


async def test_the_column_follows_the_state(
    stores: list[PostgresServiceCallStore], fresh_database: str
) -> None:
    world = World(stores[0], outbox_of(fresh_database))
    later = await world.submit(due_in=timedelta(hours=1))
    # Regression (issue #12, 10): a Scheduled call is watched too, as a backstop for its
    # hand-off timer; it used to be NULL.
    assert isinstance(later, Scheduled) and later.handoff_at is not None
    assert await watchdog_at(fresh_database, later) == later.handoff_at + HANDOFF_BACKSTOP
    call = await world.submit()
    assert isinstance(call, Dispatched)
    assert await watchdog_at(fresh_database, call) == call.lease_expires_at
    running = await world.start(call)
    assert await watchdog_at(fresh_database, call) == running.deadline
    await world.succeed(call)
    assert await watchdog_at(fresh_database, call) is None


async def test_a_column_an_older_replica_left_stale_is_rewritten(
    stores: list[PostgresServiceCallStore], fresh_database: str
) -> None:
    # An orchestrator older than 0005 writes states without touching watchdog_at.
    world = World(stores[0], outbox_of(fresh_database))
    finished = await world.submit()
    lease = finished.lease_expires_at if isinstance(finished, Dispatched) else None
    assert lease is not None
    await world.start(finished)
    done = await world.succeed(finished)
    running = await world.start(await world.submit())
    for call in (finished, running):
        await set_watchdog_at(fresh_database, call, lease)
    sent = list(await world.sent())
    world.clock.current = lease

    assert await world.watchdog().sweep() is False

    assert await watchdog_at(fresh_database, finished) is None
    assert await watchdog_at(fresh_database, running) == running.deadline
    assert await world.state(finished) == done
    assert await world.state(running) == running
    assert list(await world.sent()) == sent


async def test_scheduled_calls_written_before_the_backstop_get_one(
    stores: list[PostgresServiceCallStore], fresh_database: str
) -> None:
    # Rows written by an orchestrator without the backstop have watchdog_at NULL while
    # Scheduled; a new process's sweeps set it (no migration), then it acts as for any call.
    world = World(stores[0], outbox_of(fresh_database))
    old = [await world.submit(due_in=timedelta(hours=1)) for _ in range(3)]
    for call in old:
        await set_watchdog_at(fresh_database, call, None)
    engine = make_engine(fresh_database, pool_size=2)
    try:
        fresh = World(PostgresServiceCallStore(engine), outbox_of(fresh_database))
        fresh.clock.current = world.clock.current
        await fresh.watchdog().sweep()
        for call in old:
            assert isinstance(call, Scheduled) and call.handoff_at is not None
            assert await watchdog_at(fresh_database, call) == call.handoff_at + HANDOFF_BACKSTOP
            assert await fresh.state(call) == call

        first = old[0]
        assert isinstance(first, Scheduled) and first.handoff_at is not None
        fresh.clock.current = first.handoff_at + HANDOFF_BACKSTOP
        await fresh.watchdog().sweep()
        for call in old:
            assert isinstance(await fresh.state(call), Dispatched)
            assert [r.attempt for r in await fresh.execution_requests(call)] == [1]
    finally:
        await engine.dispose()


async def test_migration_0005_backfills_calls_in_flight(fresh_database: str) -> None:
    engine = make_engine(fresh_database, pool_size=2)
    world = World(PostgresServiceCallStore(engine), outbox_of(fresh_database))
    later = await world.submit(due_in=timedelta(hours=1))
    dispatched = await world.submit()
    running = await world.start(await world.submit())
    finished = await world.submit()
    await world.start(finished)
    await world.succeed(finished)
    assert isinstance(dispatched, Dispatched) and isinstance(running, Running)
    await engine.dispose()  # no pooled session keeps a plan over the dropped column

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sqlalchemy_url(fresh_database)
    config.attributes["schema"] = "orchestrator"
    await asyncio.to_thread(command.downgrade, config, "0004")
    await asyncio.to_thread(command.upgrade, config, "head")

    assert await watchdog_at(fresh_database, later) is None
    assert await watchdog_at(fresh_database, dispatched) == dispatched.lease_expires_at
    assert await watchdog_at(fresh_database, running) == running.deadline
    assert await watchdog_at(fresh_database, finished) is None
    try:
        overdue = await world.store.overdue_watchdogs(running.deadline, 10)
    finally:
        await engine.dispose()
    assert {s.spec.service_call_id for s in overdue} == {
        dispatched.spec.service_call_id,
        running.spec.service_call_id,
    }
