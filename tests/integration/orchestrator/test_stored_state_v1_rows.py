"""Rows written before the stored state had a format version (v1) read back through the
Postgres store as the same domain values, and the SQL that reads the state by name (the BASIC
list projection, the hand-off backstop's backfill) works on them as on new rows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import make_engine
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.adapters.tables import service_calls
from orchestrator.domain.states import (
    Canceled,
    Dispatched,
    Failed,
    Running,
    Scheduled,
    ServiceCallState,
    Succeeded,
    status_of,
)
from orchestrator.ports import ListQuery
from tests.stored_state_cases import CASES, GOLDEN


@pytest.fixture
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(fresh_database, pool_size=2)
    yield engine
    await engine.dispose()


def _row(name: str, state: ServiceCallState) -> dict[str, Any]:
    """The row as the store of the day wrote it, its state the v1 golden file as it is. Each
    case under a tenant of its own: the cases share one call id."""
    stored = json.loads((GOLDEN / "state_v1" / f"{name}.json").read_text(encoding="utf-8"))
    assert "v" not in stored
    due_at, attempt, completed_at = None, len(state.attempts), None
    match state:
        case Scheduled() | Dispatched() | Running():
            due_at, attempt = state.due_at, state.attempt
        case Succeeded() | Failed():
            completed_at = state.completed_at
        case Canceled():
            completed_at = state.canceled_at
    return {
        "tenant_id": f"golden-{name}",
        "service_call_id": state.spec.service_call_id,
        "status": status_of(state).value,
        "version": state.version,
        "due_at": due_at,
        "attempt": attempt,
        "tags": sorted(state.spec.tags),
        "idempotency_key": state.spec.idempotency_key,
        "state": stored,
        "created_at": state.spec.created_at,
        "updated_at": state.spec.created_at,
        "completed_at": completed_at,
        "watchdog_at": None,
    }


async def test_every_v1_row_reads_back_as_its_domain_value(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.insert(service_calls), [_row(n, s) for n, s in CASES.items()])
    store = PostgresServiceCallStore(engine)
    try:
        for name, state in CASES.items():
            tenant = f"golden-{name}"
            assert await store.get(tenant, state.spec.service_call_id) == state, name
            (full,) = (await store.list(ListQuery(tenant, page_size=5, full=True))).items
            assert full == state, name
            # The BASIC view's projection finds the body and the snippets by their v1 names.
            (basic,) = (await store.list(ListQuery(tenant, page_size=5, full=False))).items
            assert basic.spec.request.body == b"", name
            assert all(a.response_snippet == "" for a in basic.attempts), name
            assert basic == replace(
                state,
                spec=replace(state.spec, request=replace(state.spec.request, body=b"")),
                attempts=tuple(replace(a, response_snippet="") for a in state.attempts),
            ), name
    finally:
        await store.close()


async def test_the_backstop_backfill_reads_a_v1_row_s_handoff_time(engine: AsyncEngine) -> None:
    name = "scheduled_full"
    state = CASES[name]
    assert isinstance(state, Scheduled) and state.handoff_at is not None
    async with engine.begin() as conn:
        await conn.execute(sa.insert(service_calls), [_row(name, state)])
    backstop = timedelta(seconds=30)
    store = PostgresServiceCallStore(engine, handoff_backstop=backstop)
    try:
        await store.overdue_watchdogs(state.spec.created_at, limit=10)
    finally:
        await store.close()
    async with engine.connect() as conn:
        watchdog_at = (
            await conn.execute(
                sa.select(service_calls.c.watchdog_at).where(
                    service_calls.c.tenant_id == f"golden-{name}"
                )
            )
        ).scalar_one()
    assert watchdog_at == state.handoff_at + backstop
