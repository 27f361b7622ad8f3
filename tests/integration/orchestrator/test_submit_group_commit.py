"""Group commit of submits (issue #13): concurrent submits are written together, and each
caller still gets exactly the answer a lone submit would, from the real Postgres store and
from the fake alike; nothing is acknowledged before its commit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from mesh.clock import SystemClock
from mesh.db import make_engine, migrate
from meshctl import mesh
from meshctl.layout import Layout
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.domain.errors import IdempotencyConflict
from orchestrator.domain.model import DEFAULT_RETRY_POLICY, HttpRequest
from orchestrator.main import MIGRATIONS
from orchestrator.ports import Accepted, Invalid, ServiceCallStore, Submission
from orchestrator.service_layer.services import Orchestrator
from tests.builders import new_tenant
from tests.fakes.store import InMemoryServiceCallStore
from tests.services import orchestrator_over


def _orchestrator(store: ServiceCallStore) -> Orchestrator:
    return orchestrator_over(store, SystemClock())


def _submission(
    tenant: str, key: str | None = None, url: str = "https://example.test/hook"
) -> Submission:
    return Submission(
        tenant_id=tenant,
        request=HttpRequest("POST", url, (), b"{}", timedelta(seconds=30)),
        tags=frozenset({"group-commit"}),
        idempotency_key=key,
        retry_policy=DEFAULT_RETRY_POLICY,
        due=timedelta(hours=1),
    )


@pytest.fixture(params=["postgres", "fake"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ServiceCallStore]:
    if request.param == "fake":
        yield InMemoryServiceCallStore()
        return
    engine = make_engine(request.getfixturevalue("fresh_database"), pool_size=4)
    postgres = PostgresServiceCallStore(engine)
    yield postgres
    await postgres.close()
    await engine.dispose()


async def test_submits_together_get_the_answers_they_would_get_alone(
    store: ServiceCallStore,
) -> None:
    orchestrator = _orchestrator(store)
    tenant = new_tenant()
    before = await orchestrator.submit(_submission(tenant, key="known"), "c")
    assert isinstance(before, Accepted) and before.created
    items = [
        *(_submission(tenant) for _ in range(10)),
        _submission(tenant, key="twice"),
        _submission(tenant, key="twice"),
        _submission(tenant, key="rival"),
        _submission(tenant, key="rival", url="https://example.test/other"),
        _submission(tenant, url="ftp://example.test/nope"),
        _submission(tenant, key="known"),
    ]

    answers = await asyncio.gather(*(orchestrator.submit(s, "c") for s in items))

    *fresh, twice_a, twice_b, rival_a, rival_b, invalid, known = answers
    for answer in fresh:
        assert isinstance(answer, Accepted) and answer.created
    assert len({a.state.spec.service_call_id for a in fresh if isinstance(a, Accepted)}) == 10
    assert isinstance(twice_a, Accepted) and isinstance(twice_b, Accepted)
    assert [twice_a.created, twice_b.created] == [True, False]
    assert twice_a.state == twice_b.state
    assert isinstance(rival_a, Accepted) and rival_a.created
    assert isinstance(rival_b, IdempotencyConflict)
    assert isinstance(invalid, Invalid)
    assert [v.field for v in invalid.violations] == ["service_call.request.url"]
    assert isinstance(known, Accepted) and not known.created
    assert known.state == before.state
    for answer in (*fresh, twice_a, rival_a):
        assert isinstance(answer, Accepted)
        stored = await store.get(tenant, answer.state.spec.service_call_id)
        assert stored == answer.state


async def test_32_concurrent_submits_with_one_key_make_one_call(store: ServiceCallStore) -> None:
    orchestrator = _orchestrator(store)
    tenant = new_tenant()

    answers = await asyncio.gather(
        *(orchestrator.submit(_submission(tenant, key="once"), "c") for _ in range(32))
    )

    accepted = [a for a in answers if isinstance(a, Accepted)]
    assert len(accepted) == 32
    assert sum(a.created for a in accepted) == 1
    assert len({a.state for a in accepted}) == 1


# A Postgres of this test's own (durable, as in production): it is killed mid-batch.
@pytest.fixture
def crashable_postgres(test_layout: Layout) -> Iterator[Layout]:
    layout = replace(
        test_layout,
        run_dir=test_layout.run_dir / "crash-pg",
        pg_port=test_layout.pg_port - 10,
        pg_fsync=True,
    )
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    mesh._infra(layout, "postgres.sh", "start")
    migrate(layout.database_url, MIGRATIONS, "orchestrator")
    with psycopg.connect(layout.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE orchestrator.service_calls, orchestrator.outbox CASCADE")
    yield layout
    mesh._infra(layout, "postgres.sh", "stop")


def _kill_postmaster(layout: Layout) -> None:
    """SIGQUIT, as `pg_ctl stop -m immediate`: every backend ends at once, no checkpoint;
    what was not committed is gone after crash recovery."""
    data = (layout.run_dir / "pg").resolve() / "data"
    pid = int((data / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGQUIT)
    while Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if processes_state(pid) == "Z":
            break


def processes_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


async def test_every_acknowledged_submit_survives_a_postgres_crash_mid_batch(
    crashable_postgres: Layout,
) -> None:
    layout = crashable_postgres
    engine = make_engine(layout.database_url, pool_size=4)
    store = PostgresServiceCallStore(engine)
    orchestrator = _orchestrator(store)
    tenant = new_tenant()
    acknowledged: list[str] = []
    crashed = asyncio.Event()
    busy = asyncio.Event()

    async def submitter() -> None:
        while not crashed.is_set():
            try:
                answer = await orchestrator.submit(_submission(tenant), "c")
            except Exception:
                await asyncio.sleep(0.01)  # the crash: this submit was not acknowledged
                continue
            assert isinstance(answer, Accepted) and answer.created
            acknowledged.append(answer.state.spec.service_call_id)
            if len(acknowledged) >= 300:
                busy.set()

    async def crash_when_busy() -> None:
        await busy.wait()
        await asyncio.to_thread(_kill_postmaster, layout)
        crashed.set()

    try:
        await asyncio.wait_for(
            asyncio.gather(crash_when_busy(), *(submitter() for _ in range(64))), 120
        )
    finally:
        await store.close()
        await engine.dispose()
    await asyncio.to_thread(mesh._infra, layout, "postgres.sh", "start")

    with psycopg.connect(layout.database_url) as conn:
        stored = {
            str(row[0])
            for row in conn.execute(
                "SELECT service_call_id FROM orchestrator.service_calls WHERE tenant_id = %s",
                (tenant,),
            )
        }
        outboxed: dict[str, int] = dict(
            conn.execute(
                "SELECT key, count(*) FROM orchestrator.outbox WHERE key LIKE %s GROUP BY key",
                (f"{tenant}/%",),
            ).fetchall()
        )
    assert len(acknowledged) >= 300
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged calls lost in the crash"
    # Each stored call came with its outbox rows (one transaction): none without the other.
    assert set(outboxed) == {f"{tenant}/{c}" for c in stored}
    assert len(set(outboxed.values())) == 1
