"""A replay's link (ServiceCallSpec.replay_of, state format version 3) round-trips through the
Postgres store: read by GET, by the FULL list and by the BASIC view's SQL projection; a call
submitted as itself reads back without one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import make_engine
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.ports import ListQuery
from tests.builders import new_tenant, spec, submit_step

ORIGINAL = "01890a5d-ac96-774b-bcce-b302099a8057"


@pytest.fixture
async def store(fresh_database: str) -> AsyncIterator[PostgresServiceCallStore]:
    engine: AsyncEngine = make_engine(fresh_database, pool_size=2)
    store = PostgresServiceCallStore(engine)
    yield store
    await store.close()
    await engine.dispose()


async def test_the_link_reads_back_in_every_view(store: PostgresServiceCallStore) -> None:
    tenant = new_tenant()
    plain = spec(tenant)
    linked = replace(spec(tenant), replay_of=ORIGINAL)
    for call in (plain, linked):
        await store.transact(
            tenant,
            call.service_call_id,
            submit_step(call, call.created_at + timedelta(hours=1)),
            new_call=True,
        )
    stored = await store.get(tenant, linked.service_call_id)
    assert stored is not None and stored.spec == linked
    unlinked = await store.get(tenant, plain.service_call_id)
    assert unlinked is not None and unlinked.spec.replay_of is None
    for full in (True, False):
        page = await store.list(ListQuery(tenant, page_size=5, full=full))
        assert {s.spec.service_call_id: s.spec.replay_of for s in page.items} == {
            plain.service_call_id: None,
            linked.service_call_id: ORIGINAL,
        }
