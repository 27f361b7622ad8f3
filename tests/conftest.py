"""Shared fixtures: a test mesh on its own ports (so tests run beside `make up`).

Integration tests get real Postgres and Kafka; e2e tests get the whole mesh as processes.
Both are started once per session by the same code `make up` uses, and stopped at the end
(set KEEP_TEST_MESH=1 to leave them running for debugging).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import make_engine
from meshctl import mesh
from meshctl.layout import Layout

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if TESTS / "integration" in path.parents:
            item.add_marker(pytest.mark.integration)
        if TESTS / "e2e" in path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def test_layout() -> Layout:
    # Short leases so that recovery paths finish within a test's patience.
    return Layout.test().with_service_env(
        HANDOFF_LEAD_S="1.0",
        DISPATCH_LEASE_S="5.0",
        ATTEMPT_GRACE_S="5.0",
        CLAIM_LEASE_S="3.0",
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
def running_mesh(infra: Layout) -> Iterator[Layout]:
    mesh.start_services(infra)
    mesh.start_envoy(infra)
    mesh.wait_healthy(infra)
    yield infra
    if not os.environ.get("KEEP_TEST_MESH"):
        mesh.stop_mesh_processes(infra)
