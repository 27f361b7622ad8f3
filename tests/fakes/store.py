"""In-memory ServiceCallStore with the Postgres adapter's semantics."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from mesh.ports import OutgoingMessage
from orchestrator.adapters.store import DEFAULT_HANDOFF_BACKSTOP
from orchestrator.domain.decide import watchdog_due
from orchestrator.domain.states import (
    Dispatched,
    Running,
    Scheduled,
    ServiceCallState,
    status_of,
)
from orchestrator.ports import Cursor, ListQuery, Page, Step, Transition


@dataclass
class InMemoryServiceCallStore:
    calls: dict[tuple[str, str], ServiceCallState] = field(default_factory=dict)
    outbox: list[OutgoingMessage] = field(default_factory=list)
    inbox: set[str] = field(default_factory=set)
    _locks: defaultdict[tuple[str, str], asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )
    _due: dict[tuple[str, str], datetime] = field(default_factory=dict)
    handoff_backstop: timedelta = DEFAULT_HANDOFF_BACKSTOP

    async def get(self, tenant_id: str, service_call_id: str) -> ServiceCallState | None:
        return self.calls.get((tenant_id, service_call_id))

    async def list(self, query: ListQuery) -> Page:
        def sort_value(state: ServiceCallState) -> datetime:
            if query.order_by == "create_time":
                return state.spec.created_at
            return self._due[(state.spec.tenant_id, state.spec.service_call_id)]

        def matches(state: ServiceCallState) -> bool:
            spec = state.spec
            due = self._due[(spec.tenant_id, spec.service_call_id)]
            return (
                spec.tenant_id == query.tenant_id
                and (not query.statuses or status_of(state) in query.statuses)
                and query.tags <= spec.tags
                and (query.created_from is None or spec.created_at >= query.created_from)
                and (query.created_before is None or spec.created_at < query.created_before)
                and (query.due_from is None or due >= query.due_from)
                and (query.due_before is None or due < query.due_before)
            )

        def key(state: ServiceCallState) -> tuple[datetime, str]:
            return (sort_value(state), state.spec.service_call_id)

        rows = sorted(
            (s for s in self.calls.values() if matches(s)), key=key, reverse=query.descending
        )
        if query.after is not None:
            position = (query.after.sort_value, query.after.service_call_id)
            rows = [
                r for r in rows if (key(r) < position if query.descending else key(r) > position)
            ]
        page = rows[: query.page_size]
        cursor = None
        if len(rows) > query.page_size:
            last = page[-1]
            cursor = Cursor(sort_value(last), last.spec.service_call_id)
        return Page(items=page if query.full else [basic(s) for s in page], next_cursor=cursor)

    async def overdue_watchdogs(self, now: datetime, limit: int) -> Sequence[ServiceCallState]:
        overdue = [
            (due_at, state)
            for state in self.calls.values()
            if (due_at := watchdog_due(state, self.handoff_backstop)) is not None and due_at <= now
        ]
        overdue.sort(key=lambda pair: pair[0])
        return [state for _, state in overdue[:limit]]

    async def transact(
        self,
        tenant_id: str,
        service_call_id: str,
        step: Step,
        event_id: str | None = None,
        *,
        new_call: bool = False,  # a hint for group commit; one dict write needs none
    ) -> Transition | None:
        key = (tenant_id, service_call_id)
        async with self._locks[key]:
            if event_id is not None and event_id in self.inbox:
                return None
            before = self.calls.get(key)
            transition = step(before)  # a step that raises leaves the fact unapplied, unmarked
            if event_id is not None:
                self.inbox.add(event_id)
            if transition.events and transition.state is not None:
                after = transition.state
                self.calls[key] = after
                if isinstance(after, Scheduled | Dispatched | Running):
                    self._due[key] = after.due_at
                self.outbox.extend(transition.messages)
            return transition


def basic(state: ServiceCallState) -> ServiceCallState:
    """What the Postgres store's BASIC list reads: no request body, no response snippets."""
    request = replace(state.spec.request, body=b"")
    return replace(
        state,
        spec=replace(state.spec, request=request),
        attempts=tuple(replace(a, response_snippet="") for a in state.attempts),
    )
