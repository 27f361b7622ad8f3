"""Builders for domain values in tests: real states made by the real core, never by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from orchestrator.domain.commands import Command, SubmitServiceCall
from orchestrator.domain.decide import decide, evolve
from orchestrator.domain.events import Event
from orchestrator.domain.idempotency import fingerprint
from orchestrator.domain.model import (
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMING,
    HttpRequest,
    ServiceCallSpec,
)
from orchestrator.domain.states import ServiceCallState
from orchestrator.ports import Step, Transition

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FINGERPRINT_KEY = b"test-fingerprint-key"


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def spec(
    tenant_id: str,
    *,
    created_at: datetime = T0,
    tags: frozenset[str] = frozenset(),
    url: str = "https://example.test/hook",
    service_call_id: str | None = None,
) -> ServiceCallSpec:
    request = HttpRequest(
        "POST", url, (("content-type", "application/json"),), b"{}", timedelta(seconds=30)
    )
    return ServiceCallSpec(
        tenant_id=tenant_id,
        service_call_id=service_call_id or str(uuid.uuid4()),
        request=request,
        tags=tags,
        idempotency_key=None,
        retry_policy=DEFAULT_RETRY_POLICY,
        fingerprint=fingerprint(
            request, tags, DEFAULT_RETRY_POLICY, created_at, key=FINGERPRINT_KEY
        ),
        created_at=created_at,
    )


def step_for(command: Command, now: datetime) -> Step:
    """The step the orchestrator runs: decide, then evolve through every event."""

    def step(before: ServiceCallState | None) -> Transition:
        decision = decide(before, command, now, DEFAULT_TIMING)
        if not isinstance(decision, tuple):
            return Transition(before, rejection=decision)
        after = before
        for event in decision:
            after = evolve(after, event)
        return Transition(after, decision)

    return step


def submit_step(call: ServiceCallSpec, due_at: datetime) -> Step:
    return step_for(SubmitServiceCall(spec=call, due_at=due_at), call.created_at)


def replayed(events: list[Event]) -> ServiceCallState:
    state: ServiceCallState | None = None
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state
