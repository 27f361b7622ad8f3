"""One attempt the executor was asked to perform, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

# Headers the executor sets itself; same-named headers from the call spec are replaced.
IDEMPOTENCY_KEY = "Idempotency-Key"
CALL_ID = "X-ServiceCall-Id"
ATTEMPT = "X-ServiceCall-Attempt"
_OWN_HEADERS = frozenset(h.lower() for h in (IDEMPOTENCY_KEY, CALL_ID, ATTEMPT))


@dataclass(frozen=True, slots=True)
class CallRef:
    """Whose attempt it is; echoed on every message about it."""

    tenant_id: str
    service_call_id: str
    correlation_id: str
    sequence: int


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What to send to the target, once; `timeout` bounds the whole attempt."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    timeout: timedelta


@dataclass(frozen=True, slots=True)
class ExecutionOrder:
    call: CallRef
    attempt: int
    not_before: datetime
    lease_expires_at: datetime | None
    request: HttpRequest
    idempotency_key: str
    snippet_bytes: int

    def outgoing_request(self) -> HttpRequest:
        """The spec's request as given, plus the executor's headers (which win over the spec's)."""
        kept = tuple(
            (name, value)
            for name, value in self.request.headers
            if name.lower() not in _OWN_HEADERS
        )
        headers = (
            *kept,
            (IDEMPOTENCY_KEY, self.idempotency_key),
            (CALL_ID, self.call.service_call_id),
            (ATTEMPT, str(self.attempt)),
        )
        return replace(self.request, headers=headers)
