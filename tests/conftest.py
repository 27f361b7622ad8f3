"""Shared fixtures: a test mesh on its own ports (so tests run beside `make up`).

Integration tests get real Postgres and Kafka; e2e tests get the whole mesh as processes.
Both are started once per session by the same code `make up` uses, and stopped at the end
(set KEEP_TEST_MESH=1 to leave them running for debugging).
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import make_engine, migrate
from meshctl import mesh
from meshctl.layout import Layout
from orchestrator.adapters.tenants import TenantAdmin
from orchestrator.main import MIGRATIONS as ORCHESTRATOR_MIGRATIONS
from scheduler.main import MIGRATIONS as SCHEDULER_MIGRATIONS

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if TESTS / "integration" in path.parents:
            item.add_marker(pytest.mark.integration)
        if TESTS / "e2e" in path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def test_slot() -> Iterator[int]:
    """A slot of ports and run dir held for this session (an flock), so that two test runs
    on one machine (two developers, a developer and CI) never stop each other's mesh."""
    # Ports are machine-wide, so the locks are too (not per checkout).
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    locks = cache / "servicecall" / "test-slots"
    locks.mkdir(parents=True, exist_ok=True)
    for slot in range(8):
        handle = (locks / f"test-slot-{slot}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield slot
        finally:
            handle.close()
        return
    raise RuntimeError("all 8 test slots are busy")


@pytest.fixture(scope="session")
def test_layout(test_slot: int) -> Layout:
    # Short leases so that recovery paths finish within a test's patience.
    return Layout.test(test_slot).with_service_env(
        HANDOFF_LEAD_S="1.0",
        DISPATCH_LEASE_S="5.0",
        ATTEMPT_GRACE_S="5.0",
        CLAIM_LEASE_S="3.0",
        API_KEY_CACHE_S="0",
        LOG_LEVEL="info",
    )


@pytest.fixture(scope="session")
def infra(test_layout: Layout) -> Iterator[Layout]:
    mesh.start_infra(test_layout)
    mesh.migrate(test_layout)
    yield test_layout
    if not os.environ.get("KEEP_TEST_MESH"):
        mesh.stop_mesh_processes(test_layout)
        mesh.stop_infra(test_layout)


@pytest.fixture(scope="session")
async def engine(infra: Layout) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(infra.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def template_database(infra: Layout) -> str:
    """A migrated database that fresh per-test databases are cloned from (cheap: a file copy)."""
    admin = infra.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS servicecall_template WITH (FORCE)")
        conn.execute("CREATE DATABASE servicecall_template")
    url = infra.database_url.rsplit("/", 1)[0] + "/servicecall_template"
    migrate(url, ORCHESTRATOR_MIGRATIONS, "orchestrator")
    migrate(url, SCHEDULER_MIGRATIONS, "scheduler")
    return url


@pytest.fixture
def fresh_database(template_database: str) -> Iterator[str]:
    """A database of this test's own, for tests that must see no other test's rows (a relay
    reads the whole outbox; a firing loop claims every due timer)."""
    base = template_database.rsplit("/", 1)[0]
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE servicecall_template")
    yield f"{base}/{name}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


class KeyRing:
    """API keys for test tenants, made on first use through the real admin adapter."""

    def __init__(self, database_url: str) -> None:
        self._admin = TenantAdmin(database_url)
        self._keys: dict[str, str] = {}

    def for_tenant(self, tenant_id: str) -> str:
        if tenant_id not in self._keys:
            self._admin.create_tenant(tenant_id)
            self._keys[tenant_id] = self._admin.create_key(tenant_id).text
        return self._keys[tenant_id]


@pytest.fixture(scope="session")
def key_ring(infra: Layout) -> KeyRing:
    return KeyRing(infra.database_url)


@pytest.fixture(scope="session")
def running_mesh(infra: Layout) -> Iterator[Layout]:
    # Never reuse service processes a previous session left (KEEP_TEST_MESH): they may run
    # older code than the tests.
    mesh.stop_mesh_processes(infra)
    mesh.start_services(infra)
    mesh.start_envoy(infra)
    mesh.wait_healthy(infra)
    yield infra
    if not os.environ.get("KEEP_TEST_MESH"):
        mesh.stop_mesh_processes(infra)


@pytest.fixture(scope="session")
def prometheus(running_mesh: Layout) -> Iterator[Layout]:
    """A Prometheus scraping the test mesh (scripts/infra/prometheus.sh), started only for the
    tests that ask for it: the rest of `make test` pays nothing for it."""
    mesh.start_prometheus(running_mesh)
    yield running_mesh
    if not os.environ.get("KEEP_TEST_MESH"):
        mesh.stop_prometheus(running_mesh)
