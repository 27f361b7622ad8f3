"""The materialiser over the real stores: two passes at once (two replicas) and a pass redone
after it died before its commit each make every occurrence's call exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.clock import Uuid7Gen
from mesh.db import make_engine
from mesh.secrets import SecretBox
from orchestrator.adapters.schedules import PostgresScheduleStore
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.adapters.tables import service_calls
from orchestrator.domain.schedules import Schedule
from orchestrator.domain.validation import Limits
from orchestrator.ports import Advance
from orchestrator.service_layer.schedules import Materialiser, Schedules
from tests.builders import T0, new_tenant
from tests.fakes.clock import FakeClock
from tests.schedule_builders import draft
from tests.services import orchestrator_over

BOX = SecretBox({1: bytes(32)}, current=1)


@dataclass
class Mesh:
    engine: AsyncEngine
    clock: FakeClock
    calls: PostgresServiceCallStore
    store: PostgresScheduleStore

    def materialiser(self, store: object = None) -> Materialiser:
        # Each its own use cases, as two replicas would have.
        return Materialiser(
            store or self.store,  # type: ignore[arg-type]
            orchestrator_over(self.calls, self.clock),
            self.clock,
            BOX,
            lookahead=timedelta(seconds=3),
            missed_after=timedelta(seconds=5),
            limit=3,
        )

    async def call_count(self) -> int:
        async with self.engine.connect() as conn:
            count = await conn.scalar(sa.select(sa.func.count()).select_from(service_calls))
        return int(count or 0)


@pytest.fixture
async def mesh(fresh_database: str) -> AsyncIterator[Mesh]:
    engine = make_engine(fresh_database, pool_size=8)
    calls = PostgresServiceCallStore(engine)
    yield Mesh(engine, FakeClock(T0), calls, PostgresScheduleStore(engine))
    await calls.close()
    await engine.dispose()


async def _create(mesh: Mesh, count: int) -> None:
    schedules = Schedules(
        mesh.store, orchestrator_over(mesh.calls, mesh.clock), mesh.clock, Uuid7Gen(), BOX, Limits()
    )
    tenant = new_tenant()
    for n in range(count):
        made = await schedules.create(draft(tenant, f"s-{n}"))
        assert isinstance(made, Schedule), made


async def test_two_replicas_passing_at_once_make_each_occurrence_once(mesh: Mesh) -> None:
    await _create(mesh, 6)
    # A limit of 3 per pass: each of the two claims what the other does not hold.
    results = await asyncio.gather(*(mesh.materialiser().run_pass() for _ in range(4)))
    assert sum(r.made for r in results) == 18
    assert sum(r.claimed for r in results) == 6
    assert await mesh.call_count() == 18
    again = await mesh.materialiser().run_pass()
    assert (again.claimed, again.made) == (0, 0)


class DiesBeforeCommit:
    def __init__(self, store: PostgresScheduleStore) -> None:
        self._store = store

    async def claim_due(self, until: datetime, limit: int, advance: Advance) -> int:
        async def then_die(schedule: Schedule) -> Schedule:
            await advance(schedule)
            raise ConnectionError("killed before the commit")

        return await self._store.claim_due(until, limit, then_die)


async def test_a_pass_redone_after_dying_before_its_commit_makes_no_call_twice(
    mesh: Mesh,
) -> None:
    await _create(mesh, 2)
    with pytest.raises(ConnectionError):
        await mesh.materialiser(DiesBeforeCommit(mesh.store)).run_pass()
    assert await mesh.call_count() == 6  # made, but the schedules were not moved on
    redo = await mesh.materialiser().run_pass()
    assert (redo.claimed, redo.made, redo.existing) == (2, 0, 6)
    assert await mesh.call_count() == 6
