"""Value objects of a ServiceCall: the HTTP request, retry policy, timing and attempt records."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

# A secret header is stored sealed: it keeps its name and carries SEALED_PREFIX +
# base64(sealed bytes) as its value (sealed at submit by service_layer/sealing.py, moved into
# ExecutionRequested.sealed_headers by mapping.py). The prefix alone proves nothing: a client
# may send `X-Note: sealed:abc`, and that value is the client's text.
SEALED_PREFIX = "sealed:"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    # A tuple of pairs, not a mapping: HTTP allows repeated names and their order is meaningful.
    headers: tuple[tuple[str, str], ...]
    body: bytes
    attempt_timeout: timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # Counts every attempt, the first included: 1 means "never retry".
    max_attempts: int
    # Measured from the start of the first attempt, not from submission: a call due in a
    # month must still get its retries.
    max_retry_duration: timedelta | None
    min_backoff: timedelta
    max_backoff: timedelta
    multiplier: float
    # Fraction of the backoff that may be added (0 = none, 1 = up to twice the backoff); a
    # jittered delay stays between min_backoff and max_backoff (domain/retry.py).
    jitter: float
    retryable_status_codes: frozenset[int]


# Cloud Tasks retries 100 times by default; for calls to third-party endpoints a handful of
# attempts spread over about a minute is a safer default, and tenants can ask for more.
# 408/425/429 and the 5xx gateway family are the statuses that say "try again later";
# 501 and 505 are permanent, so they are left out.
DEFAULT_RETRY_POLICY = RetryPolicy(
    max_attempts=5,
    max_retry_duration=None,
    min_backoff=timedelta(seconds=1),
    max_backoff=timedelta(hours=1),
    multiplier=2.0,
    jitter=0.2,
    retryable_status_codes=frozenset({408, 425, 429, 500, 502, 503, 504}),
)


@dataclass(frozen=True, slots=True)
class Timing:
    handoff_lead: timedelta
    dispatch_lease: timedelta
    attempt_grace: timedelta
    # How much earlier than its fire time a hand-off timer may be applied. The scheduler fires
    # the hand-offs of calls crowded into a short stretch early, spread at the rate the
    # pipeline takes them, so that all of them reach the executor before their due time
    # (scheduler/domain/window.py); such a call is refused cancel/reschedule that much earlier.
    # The executor still sends at due_at, and the lease runs from due_at.
    handoff_early_max: timedelta = timedelta(0)


# Lead covers a couple of Kafka hops and a Postgres commit; the lease must outlast a consumer
# rebalance before a lost hand-off is sent again; grace absorbs executor-to-orchestrator lag.
DEFAULT_TIMING = Timing(
    handoff_lead=timedelta(seconds=2),
    dispatch_lease=timedelta(seconds=30),
    attempt_grace=timedelta(seconds=30),
    handoff_early_max=timedelta(seconds=15),
)


# An inclusive range of HTTP statuses, (first, last).
StatusRange = tuple[int, int]


@dataclass(frozen=True, slots=True)
class ResponseRules:
    """Which statuses count as success (empty: 200-299) and which failing statuses are
    retried (None: the default, 408, 425, 429, 5xx, plus the retry policy's extra codes;
    set: exactly these). Timeouts and transport errors are retried either way."""

    success_statuses: tuple[StatusRange, ...] = ()
    retryable_statuses: tuple[StatusRange, ...] | None = None


@dataclass(frozen=True, slots=True)
class ServiceCallSpec:
    tenant_id: str
    service_call_id: str
    request: HttpRequest
    tags: frozenset[str]
    idempotency_key: str | None
    retry_policy: RetryPolicy
    fingerprint: str
    created_at: datetime
    # A replay (ReplayServiceCall) names the terminal call it was made from: its id, in the
    # same tenant. None for a call submitted as itself.
    replay_of: str | None = None
    # Completion callbacks (#17): absolute http(s) URLs POSTed the outcome when the call ends
    # (any terminal state) and when it FAILS. None: no callback.
    callback_url: str | None = None
    failure_callback_url: str | None = None
    # An attempt sent more than this after its due time is not sent: the call FAILS instead.
    max_lateness: timedelta | None = None
    # Set by the mesh only: the id of the call whose outcome this callback carries (same
    # tenant), and the id of the schedule whose occurrence this call is.
    callback_of: str | None = None
    schedule_id: str | None = None
    # #18: how responses are judged (None: the defaults), the queue the call is delivered
    # through (None: the tenant's `default` queue), and its ordering key within that queue.
    response_rules: ResponseRules | None = None
    queue_id: str | None = None
    ordering_key: str | None = None


class AttemptOutcome(enum.Enum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    # The executor never reported a result before the attempt deadline.
    TIMED_OUT = "TIMED_OUT"


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    response_status: int | None
    response_snippet: str
    error: str
    retryable: bool
    retry_after: timedelta | None
    ended_at: datetime
    # When the request went out, as the executor reports it with the result; the executor
    # sends no Started for an attempt that finishes quickly (docs/executor.md).
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    # When the result came without a Started event, this is the result time (see decide.py).
    started_at: datetime
    ended_at: datetime | None
    outcome: AttemptOutcome | None
    response_status: int | None
    response_snippet: str
    error: str
    retry_reason: str
    retry_after: timedelta | None
