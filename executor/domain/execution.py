"""One attempt the executor was asked to perform, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum

# Headers the executor sets itself; same-named headers from the call spec are replaced.
IDEMPOTENCY_KEY = "Idempotency-Key"
CALL_ID = "X-ServiceCall-Id"
ATTEMPT = "X-ServiceCall-Attempt"
_OWN_HEADERS = frozenset(h.lower() for h in (IDEMPOTENCY_KEY, CALL_ID, ATTEMPT))
# W3C trace context: the executor's, unless the spec names its own trace.
TRACEPARENT = "traceparent"


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
    # Whose request it is: not sent, but shares of the client's own resources (name lookups)
    # are per tenant.
    tenant_id: str = ""


@dataclass(frozen=True, slots=True)
class ExecutionOrder:
    call: CallRef
    attempt: int
    not_before: datetime
    lease_expires_at: datetime | None
    request: HttpRequest
    idempotency_key: str
    snippet_bytes: int
    # Secret header values as sealed by the orchestrator (name, sealed bytes); opened only
    # right before sending, so plaintext never sits in a held order.
    sealed_headers: tuple[tuple[str, bytes], ...] = ()
    # From the call's max_lateness: the request is not sent after this instant (None: no
    # limit); the attempt fails with MAX_LATENESS_EXCEEDED instead.
    send_deadline: datetime | None = None
    # The call's success statuses, inclusive (first, last) ranges; empty: 200-299
    # (executor/domain/outcome.py classify_response).
    success_statuses: tuple[tuple[int, int], ...] = ()

    def outgoing_request(
        self,
        opened: tuple[tuple[str, str], ...] = (),
        signature: tuple[tuple[str, str], ...] = (),
        trace: tuple[tuple[str, str], ...] = (),
    ) -> HttpRequest:
        """The spec's request as given, plus the opened secret headers, then the executor's own
        headers and the signature, each of which replaces same-named headers before it.

        `trace` (traceparent, tracestate) is added only when the spec sets no `traceparent`
        of its own (plain or secret): a caller who names the trace keeps it."""
        own = (
            (IDEMPOTENCY_KEY, self.idempotency_key),
            (CALL_ID, self.call.service_call_id),
            (ATTEMPT, str(self.attempt)),
            *signature,
        )
        own_names = _OWN_HEADERS | {name.lower() for name, _ in signature}
        secret = tuple((n, v) for n, v in opened if n.lower() not in own_names)
        replaced = own_names | {name.lower() for name, _ in secret}
        kept = tuple((n, v) for n, v in self.request.headers if n.lower() not in replaced)
        if trace and not any(n.lower() == TRACEPARENT for n, _ in (*kept, *secret)):
            traced = {name.lower() for name, _ in trace}
            kept = tuple((n, v) for n, v in kept if n.lower() not in traced)
            return replace(self.request, headers=(*kept, *secret, *trace, *own))
        return replace(self.request, headers=(*kept, *secret, *own))


class Stage(Enum):
    """Where a held attempt is: waiting for its not-before time (or a slot), or sent."""

    WAITING = "waiting"
    IN_FLIGHT = "in_flight"


@dataclass(frozen=True, slots=True)
class ExecutionView:
    """One attempt this process holds, as ListExecutions shows it."""

    tenant_id: str
    service_call_id: str
    attempt: int
    stage: Stage
    not_before: datetime
    start_time: datetime | None
