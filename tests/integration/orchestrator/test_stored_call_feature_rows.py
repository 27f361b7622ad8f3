"""#17's fields of a call (callbacks, max_lateness, callback_of, schedule_id; state format
version 4) round-trip through the Postgres store: read by GET, by the FULL list and by the
BASIC view's SQL projection; a call without them reads back with none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import make_engine
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.domain.model import ServiceCallSpec
from orchestrator.ports import ListQuery
from tests.builders import new_tenant, spec, submit_step


@pytest.fixture
async def store(fresh_database: str) -> AsyncIterator[PostgresServiceCallStore]:
    engine: AsyncEngine = make_engine(fresh_database, pool_size=2)
    store = PostgresServiceCallStore(engine)
    yield store
    await store.close()
    await engine.dispose()


def _fields(call: ServiceCallSpec) -> tuple[object, ...]:
    return (
        call.callback_url,
        call.failure_callback_url,
        call.max_lateness,
        call.callback_of,
        call.schedule_id,
    )


async def test_the_fields_read_back_in_every_view(store: PostgresServiceCallStore) -> None:
    tenant = new_tenant()
    plain = spec(tenant)
    featured = replace(
        spec(tenant),
        callback_url="https://hooks.example.test/done",
        failure_callback_url="https://hooks.example.test/failed",
        max_lateness=timedelta(seconds=90, microseconds=5),
    )
    linked = replace(
        spec(tenant), callback_of="01890a5d-ac96-774b-bcce-b302099a8057", schedule_id="nightly"
    )
    for call in (plain, featured, linked):
        await store.transact(
            tenant,
            call.service_call_id,
            submit_step(call, call.created_at + timedelta(hours=1)),
            new_call=True,
        )
    for call in (plain, featured, linked):
        stored = await store.get(tenant, call.service_call_id)
        assert stored is not None and stored.spec == call
    for full in (True, False):
        page = await store.list(ListQuery(tenant, page_size=5, full=full))
        assert {s.spec.service_call_id: _fields(s.spec) for s in page.items} == {
            c.service_call_id: _fields(c) for c in (plain, featured, linked)
        }
