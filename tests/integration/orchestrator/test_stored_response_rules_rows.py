"""#18's response rules of a call (state format version 5) round-trip through the Postgres
store: read by GET, by the FULL list and by the BASIC view's SQL projection; a call without
them reads back with none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import make_engine
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.domain.model import ResponseRules
from orchestrator.ports import ListQuery
from tests.builders import new_tenant, spec, submit_step


@pytest.fixture
async def store(fresh_database: str) -> AsyncIterator[PostgresServiceCallStore]:
    engine: AsyncEngine = make_engine(fresh_database, pool_size=2)
    store = PostgresServiceCallStore(engine)
    yield store
    await store.close()
    await engine.dispose()


async def test_the_rules_read_back_in_every_view(store: PostgresServiceCallStore) -> None:
    tenant = new_tenant()
    plain = spec(tenant)
    both = replace(
        spec(tenant),
        response_rules=ResponseRules(
            success_statuses=((200, 299), (404, 404)), retryable_statuses=((409, 409),)
        ),
    )
    success_only = replace(spec(tenant), response_rules=ResponseRules(((302, 302),)))
    calls = (plain, both, success_only)
    for call in calls:
        await store.transact(
            tenant,
            call.service_call_id,
            submit_step(call, call.created_at + timedelta(hours=1)),
            new_call=True,
        )
    for call in calls:
        stored = await store.get(tenant, call.service_call_id)
        assert stored is not None and stored.spec == call
    for full in (True, False):
        page = await store.list(ListQuery(tenant, page_size=5, full=full))
        assert {s.spec.service_call_id: s.spec.response_rules for s in page.items} == {
            c.service_call_id: c.response_rules for c in calls
        }
