"""Completion callbacks: which calls a finished call's outcome is POSTed to, under which
deterministic key, and the outcome document they carry.

A callback is an ordinary service call made by the mesh (orchestrator/service_layer/
callbacks.py), linked to its parent by `callback_of` and keyed by the parent's id, so making
it twice makes it once. A callback never has callbacks of its own: callbacks never call back.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orchestrator.domain.model import DEFAULT_RETRY_POLICY, HttpRequest, RetryPolicy
from orchestrator.domain.states import (
    Canceled,
    Failed,
    ServiceCallState,
    Succeeded,
    TerminalState,
    status_of,
)

# What a callback is sent with: the API's default attempt timeout and retry policy (the
# tenant cannot choose them for a callback; proto ServiceCall.callback_url).
CALLBACK_ATTEMPT_TIMEOUT = timedelta(seconds=30)
CALLBACK_RETRY_POLICY: RetryPolicy = DEFAULT_RETRY_POLICY
CALLBACK_HEADERS = (("content-type", "application/json"),)


class CallbackKind(enum.Enum):
    # callback_url: called whatever the ending.
    COMPLETION = "callback"
    # failure_callback_url: called only when the call ends FAILED.
    FAILURE = "failure-callback"


@dataclass(frozen=True, slots=True)
class CompletionCallback:
    """One callback a finished call asks for: where to, and the idempotency key that makes
    it once (the callback's id is derived from it, like any keyed call's)."""

    kind: CallbackKind
    url: str
    idempotency_key: str


def callback_key(kind: CallbackKind, parent_id: str) -> str:
    """Never change: the ids of callbacks already made depend on it. A tenant could submit a
    call under this key itself; the mesh's callback then conflicts and is not made (logged),
    which only that tenant can cause and only to itself."""
    return f"{kind.value}:{parent_id}"


def callbacks_for(state: ServiceCallState) -> tuple[CompletionCallback, ...]:
    """The callbacks the call's ending asks for: none before it ends, none for a callback."""
    spec = state.spec
    if not isinstance(state, Succeeded | Failed | Canceled) or spec.callback_of is not None:
        return ()
    wanted: list[tuple[CallbackKind, str | None]] = [(CallbackKind.COMPLETION, spec.callback_url)]
    if isinstance(state, Failed):
        wanted.append((CallbackKind.FAILURE, spec.failure_callback_url))
    return tuple(
        CompletionCallback(kind, url, callback_key(kind, spec.service_call_id))
        for kind, url in wanted
        if url is not None
    )


def callback_request(url: str, outcome: bytes) -> HttpRequest:
    return HttpRequest("POST", url, CALLBACK_HEADERS, outcome, CALLBACK_ATTEMPT_TIMEOUT)


def service_call_name(tenant_id: str, service_call_id: str) -> str:
    """A call's resource name in the public API."""
    return f"tenants/{tenant_id}/service-calls/{service_call_id}"


def outcome_document(state: TerminalState) -> bytes:
    """The JSON a callback POSTs (docs/callbacks.md): the parent's name, how it ended, and
    what its last attempt got. Fields are always present (0 and "" when there is nothing to
    say, as in the API), so a receiver never has to tell "absent" from "empty". Derived from
    the terminal state alone, which never changes: the same callback always carries the
    same bytes, whoever makes it and however often."""
    spec = state.spec
    last = state.attempts[-1] if state.attempts else None
    match state:
        case Succeeded():
            completed_at, reason = state.completed_at, ""
        case Failed():
            completed_at, reason = state.completed_at, state.reason
        case Canceled():
            completed_at, reason = state.canceled_at, state.reason
    document = {
        "service_call": service_call_name(spec.tenant_id, spec.service_call_id),
        "state": status_of(state).value,
        "status_reason": reason,
        "attempt_count": len(state.attempts),
        "complete_time": _rfc3339(completed_at),
        "tags": sorted(spec.tags),
        "response_status": 0 if last is None else last.response_status or 0,
        "response_snippet": "" if last is None else last.response_snippet,
        "error": "" if last is None else last.error,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
