"""The Postgres store passes the same ServiceCallStore contract as the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from mesh.db import make_engine
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.ports import ListQuery
from tests.builders import T0, new_tenant, spec, submit_step
from tests.contracts.store import MIB, ServiceCallStoreContract


class TestPostgresServiceCallStore(ServiceCallStoreContract):
    @pytest.fixture
    async def store(self, fresh_database: str) -> AsyncIterator[PostgresServiceCallStore]:
        # A database of its own: the contract writes outbox rows that a running mesh's relay
        # must never see.
        engine = make_engine(fresh_database, pool_size=4)
        store = PostgresServiceCallStore(engine)
        yield store
        await store.close()
        await engine.dispose()


async def test_a_basic_page_does_not_carry_the_bodies(fresh_database: str) -> None:
    # Regression (issue #12, 8): measured on the wire, not on the decoded state: the query a
    # BASIC list sends returns a few kB for a call with a 1 MiB body; FULL returns the body.
    engine = make_engine(fresh_database, pool_size=2)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if "ORDER BY" in statement and "service_calls" in statement:
            statements.append((statement, params))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", capture)
    store = PostgresServiceCallStore(engine)
    tenant = new_tenant()
    call = spec(tenant)
    call = replace(call, request=replace(call.request, body=b"x" * MIB))
    try:
        await store.transact(tenant, call.service_call_id, submit_step(call, T0))
        sizes = {}
        for full in (True, False):
            statements.clear()
            (item,) = (await store.list(ListQuery(tenant, page_size=10, full=full))).items
            assert len(item.spec.request.body) == (MIB if full else 0)
            ((statement, params),) = statements
            async with await psycopg.AsyncConnection.connect(fresh_database) as conn:
                cur = await conn.execute(
                    f"SELECT sum(octet_length(q.state::text)) FROM ({statement}) AS q",
                    params,
                )
                row = await cur.fetchone()
            assert row is not None
            sizes[full] = row[0]
    finally:
        await engine.dispose()
    assert sizes[True] > MIB  # base64
    assert sizes[False] < 4096, sizes
