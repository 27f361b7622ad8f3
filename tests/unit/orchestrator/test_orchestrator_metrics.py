"""The orchestrator's metrics count what the use cases do: submits by outcome, calls finished
by outcome, retries; over the in-memory store, through the wrappers main.py puts in place."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial

from prometheus_client import CollectorRegistry

from mesh.clock import Uuid7Gen
from mesh.secrets import SecretBox
from mesh.topics import Topics
from orchestrator.adapters.metrics import (
    CountedParkingLot,
    MeasuredStore,
    OrchestratorMetrics,
    RelayCounts,
)
from orchestrator.domain.commands import RecordExecutionFailed, RecordExecutionSucceeded
from orchestrator.domain.model import (
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMING,
    ExecutionResult,
    HttpRequest,
)
from orchestrator.domain.states import Canceled, ServiceCallState
from orchestrator.domain.validation import Limits
from orchestrator.mapping import outbox_messages
from orchestrator.ports import Accepted, ParkedItem, Submission
from orchestrator.service_layer.services import MeasuredOrchestrator
from tests.builders import FINGERPRINT_KEY, new_tenant
from tests.fakes.clock import FakeClock
from tests.fakes.store import InMemoryServiceCallStore


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


class World:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = OrchestratorMetrics(self.registry)
        self.clock = FakeClock()
        self.orchestrator = MeasuredOrchestrator(
            self.metrics,
            store=MeasuredStore(InMemoryServiceCallStore(), self.metrics),
            clock=self.clock,
            ids=Uuid7Gen(),
            timing=DEFAULT_TIMING,
            limits=Limits(),
            to_messages=partial(
                outbox_messages, topics=Topics.with_prefix("t."), max_snippet_bytes=256
            ),
            secrets=SecretBox({1: bytes(32)}, current=1),
            fingerprint_key=FINGERPRINT_KEY,
        )
        self.tenant_id = new_tenant()

    def submission(
        self, key: str | None = None, url: str = "https://example.test/hook", body: bytes = b"{}"
    ) -> Submission:
        return Submission(
            tenant_id=self.tenant_id,
            request=HttpRequest("POST", url, (), body, timedelta(seconds=10)),
            tags=frozenset(),
            idempotency_key=key,
            retry_policy=DEFAULT_RETRY_POLICY,
            due=None,
        )

    async def submit(self, submission: Submission | None = None) -> ServiceCallState:
        outcome = await self.orchestrator.submit(submission or self.submission(), "test")
        assert isinstance(outcome, Accepted), outcome
        return outcome.state

    def submitted(self, outcome: str) -> float:
        return value(self.registry, "servicecall_calls_submitted_total", outcome=outcome)

    def finished(self, outcome: str) -> float:
        return value(self.registry, "servicecall_calls_finished_total", outcome=outcome)

    async def report(
        self, call: ServiceCallState, command: RecordExecutionSucceeded | RecordExecutionFailed
    ) -> None:
        spec = call.spec
        await self.orchestrator.apply(
            spec.tenant_id, spec.service_call_id, command, f"{spec.service_call_id}/1", "test"
        )


def result(status: int, retryable: bool, ended_at: datetime) -> ExecutionResult:
    return ExecutionResult(status, "", "", retryable, None, ended_at, ended_at)


async def test_each_submit_is_counted_once_by_its_outcome() -> None:
    world = World()
    await world.submit(world.submission(key="k1"))
    assert world.submitted("created") == 1
    await world.submit(world.submission(key="k1"))
    assert world.submitted("existing") == 1
    conflict = await world.orchestrator.submit(world.submission(key="k1", body=b"[]"), "test")
    assert not isinstance(conflict, Accepted)
    assert world.submitted("conflict") == 1
    await world.orchestrator.submit(world.submission(url="ftp://nowhere"), "test")
    assert world.submitted("invalid") == 1
    assert world.submitted("created") == 1


async def test_a_call_that_succeeds_is_finished_once_however_often_its_result_comes() -> None:
    world = World()
    call = await world.submit()
    ok = RecordExecutionSucceeded(attempt=1, result=result(200, False, world.clock.now()))
    await world.report(call, ok)
    await world.report(call, ok)  # a redelivery: the inbox drops it
    assert world.finished("SUCCEEDED") == 1
    assert world.finished("FAILED") == 0


async def test_a_retryable_failure_counts_a_retry_and_no_finish() -> None:
    world = World()
    call = await world.submit()
    failed = RecordExecutionFailed(attempt=1, result=result(503, True, world.clock.now()))
    await world.report(call, failed)
    assert value(world.registry, "servicecall_call_retries_total") == 1
    assert world.finished("FAILED") == 0


async def test_a_cancel_finishes_the_call_as_canceled() -> None:
    world = World()
    call = await world.submit(replace(world.submission(), due=timedelta(hours=1)))
    canceled = await world.orchestrator.cancel(
        world.tenant_id, call.spec.service_call_id, "no longer needed", "test"
    )
    assert isinstance(canceled, Canceled)
    assert world.finished("CANCELED") == 1


class _Lot:
    async def park(self, item: ParkedItem) -> int:
        return 7


async def test_parked_messages_are_counted_by_source_kind() -> None:
    registry = CollectorRegistry()
    metrics = OrchestratorMetrics(registry)
    lot = CountedParkingLot(_Lot(), metrics)
    item = ParkedItem(topic="t", key="k", payload=b"", error="e", source="consumer:orchestrator")
    assert await lot.park(item) == 7
    await lot.park(ParkedItem(topic="t", key="k", payload=b"", error="e", source="outbox"))
    assert value(registry, "servicecall_messages_parked_total", source="consumer") == 1
    assert value(registry, "servicecall_messages_parked_total", source="outbox") == 1


def test_the_relay_counters_are_read_at_scrape_time() -> None:
    class Relay:
        published = 0
        refused = 0

    registry = CollectorRegistry()
    relay = Relay()
    RelayCounts(relay, registry)
    relay.published = 41
    relay.refused = 1
    assert value(registry, "servicecall_outbox_published_total") == 41
    assert value(registry, "servicecall_outbox_refused_total") == 1
