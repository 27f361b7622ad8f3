"""The orchestrator's Prometheus metrics: calls submitted and finished, retries, the outbox and
the parking lot. Observers of the ports, wired in by the composition root (main.py) around the
store and the parking lot, and given to the use cases as their SubmitObserver; the pure core
knows nothing of them.

Labels are closed sets (outcome names, a parking source kind): no tenant, no call id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.metrics import NAMESPACE, counter, gauge
from orchestrator.adapters.tables import outbox, parked_messages
from orchestrator.domain.errors import DomainError, ErrorKind
from orchestrator.domain.events import ExecutionFailed
from orchestrator.domain.states import Canceled, Failed, ServiceCallState, Succeeded
from orchestrator.ports import (
    Accepted,
    Invalid,
    ListQuery,
    Page,
    ParkedItem,
    ParkingLot,
    ServiceCallStore,
    Step,
    Transition,
)

SUBMIT_OUTCOMES = ("created", "existing", "conflict", "invalid", "error")
FINISH_OUTCOMES = ("SUCCEEDED", "FAILED", "CANCELED")


class OrchestratorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        submitted = counter(
            registry,
            "calls_submitted",
            "Submits answered, by outcome: created, existing (same idempotency key and "
            "request), conflict (same key, another request), invalid, error (an outage).",
            ["outcome"],
        )
        self.submitted = {o: submitted.labels(o) for o in SUBMIT_OUTCOMES}
        finished = counter(
            registry,
            "calls_finished",
            "Calls that reached a terminal state here, by state.",
            ["outcome"],
        )
        self.finished = {o: finished.labels(o) for o in FINISH_OUTCOMES}
        self.retries = counter(
            registry,
            "call_retries",
            "Failed attempts that the retry policy scheduled again (a retry).",
        )
        parked = counter(
            registry,
            "messages_parked",
            "Messages (source=consumer) and outbox rows (source=outbox) set aside for an "
            "operator after bounded tries.",
            ["source"],
        )
        self.parked = {s: parked.labels(s) for s in ("consumer", "outbox")}
        self.parked_waiting = gauge(
            registry,
            "parked_messages",
            "Parked messages not replayed yet (sampled from the parking table).",
        )
        self.outbox_oldest_age = gauge(
            registry,
            "outbox_oldest_unpublished_age_seconds",
            "Age of the oldest outbox row not yet published to Kafka (0: none waits); "
            "sampled from the outbox table.",
        )

    def observe_submit(self, outcome: Accepted | Invalid | DomainError) -> None:
        if isinstance(outcome, Accepted):
            self.submitted["created" if outcome.created else "existing"].inc()
        elif isinstance(outcome, Invalid):
            self.submitted["invalid"].inc()
        elif outcome.kind in (ErrorKind.CONFLICT, ErrorKind.DUPLICATE):
            self.submitted["conflict"].inc()
        else:
            self.submitted["invalid"].inc()

    def observe_submit_error(self) -> None:
        self.submitted["error"].inc()

    def observe_transition(self, transition: Transition | None) -> None:
        """A committed transition: counts a call that just became terminal and a retry. A
        terminal state with events is one that the transition moved there (no event applies
        to a terminal state), so a duplicate or refused fact counts nothing."""
        if transition is None or not transition.events:
            return
        match transition.state:
            case Succeeded():
                self.finished["SUCCEEDED"].inc()
            case Failed():
                self.finished["FAILED"].inc()
            case Canceled():
                self.finished["CANCELED"].inc()
            case _:
                for event in transition.events:
                    if isinstance(event, ExecutionFailed) and event.retry_at is not None:
                        self.retries.inc()


class MeasuredStore:
    """A ServiceCallStore that reports every committed transition to the metrics."""

    def __init__(self, store: ServiceCallStore, metrics: OrchestratorMetrics) -> None:
        self._store = store
        self._metrics = metrics

    async def get(self, tenant_id: str, service_call_id: str) -> ServiceCallState | None:
        return await self._store.get(tenant_id, service_call_id)

    async def list(self, query: ListQuery) -> Page:
        return await self._store.list(query)

    async def overdue_watchdogs(self, now: datetime, limit: int) -> Sequence[ServiceCallState]:
        return await self._store.overdue_watchdogs(now, limit)

    async def transact(
        self,
        tenant_id: str,
        service_call_id: str,
        step: Step,
        event_id: str | None = None,
        *,
        new_call: bool = False,
    ) -> Transition | None:
        transition = await self._store.transact(
            tenant_id, service_call_id, step, event_id, new_call=new_call
        )
        self._metrics.observe_transition(transition)
        return transition


class CountedParkingLot:
    def __init__(self, lot: ParkingLot, metrics: OrchestratorMetrics) -> None:
        self._lot = lot
        self._metrics = metrics

    async def park(self, item: ParkedItem) -> int:
        parked_id = await self._lot.park(item)
        # Sources are "outbox" and "consumer:<group>": the kind, not the group, is the label.
        kind = item.source.partition(":")[0]
        if kind in self._metrics.parked:
            self._metrics.parked[kind].inc()
        return parked_id


class RelayCounts:
    """The outbox relay's own counters (rows published, refused), read at scrape time: the
    relay's loop pays nothing for them."""

    def __init__(self, relay: Any, registry: CollectorRegistry) -> None:
        self._relay = relay
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return self._families(0, 0)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._relay.published, self._relay.refused)

    @staticmethod
    def _families(published: int, refused: int) -> list[Metric]:
        done = CounterMetricFamily(
            f"{NAMESPACE}_outbox_published",
            "Outbox rows the relay published to Kafka (rate(): the publish rate).",
            value=published,
        )
        set_aside = CounterMetricFamily(
            f"{NAMESPACE}_outbox_refused",
            "Outbox rows the broker refused for good (parked instead).",
            value=refused,
        )
        return [done, set_aside]


# The oldest unpublished row is the lowest unpublished id (ids are taken in insertion order):
# one row read through the outbox's partial index of unpublished ids, whatever the backlog.
_OLDEST_UNPUBLISHED = (
    sa.select(sa.extract("epoch", sa.func.now() - outbox.c.created_at))
    .where(outbox.c.published_at.is_(None))
    .order_by(outbox.c.id)
    .limit(1)
)
# The parking table holds what needed an operator: small by nature.
_PARKED_WAITING = (
    sa.select(sa.func.count())
    .select_from(parked_messages)
    .where(parked_messages.c.replayed_at.is_(None))
)


class TableSampler:
    """Sets the gauges that come from the orchestrator's tables (one cheap query each)."""

    def __init__(self, engine: AsyncEngine, metrics: OrchestratorMetrics) -> None:
        self._engine = engine
        self._metrics = metrics

    async def sample(self) -> None:
        async with self._engine.connect() as conn:
            age = (await conn.execute(_OLDEST_UNPUBLISHED)).scalar()
            parked = (await conn.execute(_PARKED_WAITING)).scalar()
        self._metrics.outbox_oldest_age.set(max(0.0, float(age)) if age is not None else 0.0)
        self._metrics.parked_waiting.set(int(parked or 0))


class OccurrenceCounts:
    """The materialiser's counts (ports.OccurrenceObserver): schedule occurrences whose call a
    pass made, and those it did not (missed by the missed-occurrence policy, or skipped: the
    call was invalid, its queue gone, or its template's secret headers no longer open)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        occurrences = counter(
            registry,
            "schedule_occurrences",
            "Schedule occurrences handled by the materialiser, by outcome: made (a call "
            "created), missed (left out by the missed-occurrence policy after an outage), "
            "skipped (not made: invalid, its queue gone, or its secret headers no longer open).",
            ["outcome"],
        )
        self._made = occurrences.labels("made")
        self._missed = occurrences.labels("missed")
        self._skipped = occurrences.labels("skipped")

    def observe_occurrences(self, made: int, missed: int, skipped: int) -> None:
        if made:
            self._made.inc(made)
        if missed:
            self._missed.inc(missed)
        if skipped:
            self._skipped.inc(skipped)
