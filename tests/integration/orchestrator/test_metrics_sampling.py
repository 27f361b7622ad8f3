"""The gauges sampled from Postgres: the outbox's oldest unpublished row and the parked items
not replayed (orchestrator), the pending timers (scheduler), over real tables."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from prometheus_client import CollectorRegistry

from mesh.db import libpq_url, make_engine
from orchestrator.adapters.metrics import OrchestratorMetrics, TableSampler
from orchestrator.adapters.parking import ParkingAdmin, PostgresParkingLot
from orchestrator.ports import ParkedItem
from scheduler.adapters.metrics import PendingSampler, SchedulerMetrics
from scheduler.adapters.store import PostgresTimerStore
from tests.fakes.clock import T0
from tests.unit.scheduler.test_scheduler_metrics import timer


async def test_outbox_age_and_parked_items_follow_the_tables(fresh_database: str) -> None:
    registry = CollectorRegistry()
    metrics = OrchestratorMetrics(registry)
    engine = make_engine(fresh_database, pool_size=2)
    sampler = TableSampler(engine, metrics)

    def age() -> float | None:
        return registry.get_sample_value("servicecall_outbox_oldest_unpublished_age_seconds")

    def parked() -> float | None:
        return registry.get_sample_value("servicecall_parked_messages")

    try:
        await sampler.sample()
        assert age() == 0 and parked() == 0
        with psycopg.connect(libpq_url(fresh_database), autocommit=True) as conn:
            for waited in (timedelta(seconds=30), timedelta(seconds=5)):
                conn.execute(
                    "INSERT INTO orchestrator.outbox (topic, key, payload, created_at)"
                    " VALUES ('t', 'k', '', now() - %s)",
                    (waited,),
                )
        await sampler.sample()
        assert 30 <= (age() or 0) < 60  # the oldest row's age, not the newest's
        parked_id = await PostgresParkingLot(engine).park(
            ParkedItem(topic="t", key="k", payload=b"", error="e", source="outbox")
        )
        await sampler.sample()
        assert parked() == 1
        ParkingAdmin(fresh_database).replay(parked_id)
        with psycopg.connect(libpq_url(fresh_database), autocommit=True) as conn:
            conn.execute("UPDATE orchestrator.outbox SET published_at = now()")
        await sampler.sample()
        assert parked() == 0 and age() == 0
    finally:
        await engine.dispose()


async def test_pending_timers_are_counted(fresh_database: str) -> None:
    registry = CollectorRegistry()
    metrics = SchedulerMetrics(registry)
    engine = make_engine(fresh_database, pool_size=2)
    try:
        store = PostgresTimerStore(engine)
        await store.arm_many([timer(T0), timer(T0 + timedelta(hours=1))])
        await PendingSampler(engine, metrics).sample()
        assert registry.get_sample_value("servicecall_timers_pending") == 2
        # Only the first is due at T0 + 1 s: it fires, the other stays pending.
        fired = await store.claim_due(T0 + timedelta(seconds=1), 10, timedelta(seconds=10))
        assert len(fired) == 1
        await store.mark_fired(
            [t.timer_id for t in fired],
            T0 + timedelta(seconds=1),
            T0 + timedelta(seconds=11),
        )
        await PendingSampler(engine, metrics).sample()
        assert registry.get_sample_value("servicecall_timers_pending") == 1
    finally:
        await engine.dispose()
