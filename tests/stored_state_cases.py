"""The domain values behind the stored-state golden files (tests/golden/orchestrator/).

One value per state shape and per variant that changes the stored form: optional fields set
and unset, tags, an idempotency key, repeated and sealed headers, a binary body, a retry
policy with and without a retry budget, and finished attempts of each outcome. The values are
written out by hand, field by field, so that the golden files pin the stored form, not
whatever a builder happens to produce.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.adapters import codec
from orchestrator.domain.model import (
    DEFAULT_RETRY_POLICY,
    Attempt,
    AttemptOutcome,
    HttpRequest,
    ResponseRules,
    RetryPolicy,
    ServiceCallSpec,
)
from orchestrator.domain.states import (
    Canceled,
    Dispatched,
    Failed,
    Running,
    Scheduled,
    ServiceCallState,
    Succeeded,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "orchestrator"

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
# Microseconds, so the golden files show that they survive.
T1 = datetime(2026, 1, 1, 12, 0, 1, 250_001, tzinfo=UTC)
DUE = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)

_PLAIN_REQUEST = HttpRequest("GET", "https://example.test/ping", (), b"", timedelta(seconds=30))

_FULL_REQUEST = HttpRequest(
    "POST",
    "https://example.test/hooks/ünïcode?x=1&y=2",
    (
        ("content-type", "application/json"),
        # Repeated names keep their order.
        ("x-trace", "a"),
        ("x-trace", "b"),
        # How a secret header is stored: sealed before it reaches the state (sealing.py).
        ("authorization", "sealed:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj"),
        # A client's own text that only looks sealed: kept as it came.
        ("x-note", "sealed:abc"),
    ),
    bytes(range(256)),
    timedelta(seconds=12, microseconds=500),
)

_BUDGETED_POLICY = RetryPolicy(
    max_attempts=7,
    max_retry_duration=timedelta(minutes=10),
    min_backoff=timedelta(milliseconds=250),
    max_backoff=timedelta(seconds=90),
    multiplier=1.5,
    jitter=0.0,
    retryable_status_codes=frozenset({503, 429, 500}),
)

_NO_RETRY_POLICY = RetryPolicy(
    max_attempts=1,
    max_retry_duration=None,
    min_backoff=timedelta(seconds=1),
    max_backoff=timedelta(seconds=1),
    multiplier=2.0,
    jitter=1.0,
    retryable_status_codes=frozenset(),
)


def _spec(
    request: HttpRequest = _PLAIN_REQUEST,
    *,
    tags: frozenset[str] = frozenset(),
    idempotency_key: str | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> ServiceCallSpec:
    return ServiceCallSpec(
        tenant_id="tenant-a",
        service_call_id="0b6f1c2e-4d5a-4e7b-9c1d-2f3a4b5c6d7e",
        request=request,
        tags=tags,
        idempotency_key=idempotency_key,
        retry_policy=retry_policy,
        fingerprint="v1:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        created_at=T0,
    )


PLAIN = _spec()
FULL = _spec(
    _FULL_REQUEST,
    tags=frozenset({"nightly", "billing", "ünï"}),
    idempotency_key="order-42",
    retry_policy=_BUDGETED_POLICY,
)

FAILED_ATTEMPT = Attempt(
    number=1,
    started_at=T0 + timedelta(days=31),
    ended_at=T0 + timedelta(days=31, seconds=2),
    outcome=AttemptOutcome.FAILED,
    response_status=503,
    response_snippet='{"error": "busy"}',
    error="",
    retry_reason="HTTP 503",
    retry_after=timedelta(seconds=20),
)
TIMED_OUT_ATTEMPT = Attempt(
    number=2,
    started_at=T0 + timedelta(days=31, minutes=1),
    ended_at=T0 + timedelta(days=31, minutes=1, seconds=42),
    outcome=AttemptOutcome.TIMED_OUT,
    response_status=None,
    response_snippet="",
    error="no result before the attempt deadline",
    retry_reason="timed out",
    retry_after=None,
)
SUCCEEDED_ATTEMPT = Attempt(
    number=3,
    started_at=T1 + timedelta(days=31, minutes=2),
    ended_at=T1 + timedelta(days=31, minutes=2, seconds=1),
    outcome=AttemptOutcome.SUCCEEDED,
    response_status=200,
    response_snippet="ok ✓",
    error="",
    retry_reason="",
    retry_after=None,
)
# No end and no outcome: the optional fields of an attempt unset.
OPEN_ATTEMPT = Attempt(
    number=1,
    started_at=T1,
    ended_at=None,
    outcome=None,
    response_status=None,
    response_snippet="",
    error="connection reset",
    retry_reason="",
    retry_after=None,
)

# name -> value; a golden file <name>.json exists for each, in every format version.
CASES: dict[str, ServiceCallState] = {
    "scheduled_minimal": Scheduled(
        spec=PLAIN, version=1, attempts=(), due_at=DUE, attempt=1, handoff_at=None
    ),
    "scheduled_full": Scheduled(
        spec=FULL,
        version=5,
        attempts=(FAILED_ATTEMPT, TIMED_OUT_ATTEMPT),
        due_at=DUE + timedelta(minutes=1, seconds=20),
        attempt=3,
        handoff_at=DUE + timedelta(minutes=1, seconds=18),
    ),
    "scheduled_no_retry_policy": Scheduled(
        spec=_spec(retry_policy=_NO_RETRY_POLICY),
        version=2,
        attempts=(),
        due_at=DUE,
        attempt=1,
        handoff_at=DUE - timedelta(seconds=2),
    ),
    "dispatched": Dispatched(
        spec=FULL,
        version=3,
        attempts=(),
        due_at=DUE,
        attempt=1,
        dispatched_at=DUE - timedelta(seconds=2),
        lease_expires_at=DUE + timedelta(seconds=30),
    ),
    "dispatched_after_failures": Dispatched(
        spec=PLAIN,
        version=7,
        attempts=(FAILED_ATTEMPT, TIMED_OUT_ATTEMPT),
        due_at=DUE,
        attempt=3,
        dispatched_at=T1,
        lease_expires_at=T1 + timedelta(seconds=30),
    ),
    "running": Running(
        spec=FULL,
        version=4,
        attempts=(FAILED_ATTEMPT,),
        due_at=DUE,
        attempt=2,
        started_at=T1,
        deadline=T1 + timedelta(seconds=42, microseconds=500),
    ),
    "succeeded": Succeeded(
        spec=FULL,
        version=9,
        attempts=(FAILED_ATTEMPT, TIMED_OUT_ATTEMPT, SUCCEEDED_ATTEMPT),
        completed_at=SUCCEEDED_ATTEMPT.ended_at or T1,
    ),
    "succeeded_first_try": Succeeded(
        spec=PLAIN, version=4, attempts=(SUCCEEDED_ATTEMPT,), completed_at=T1
    ),
    "failed": Failed(
        spec=FULL,
        version=8,
        attempts=(FAILED_ATTEMPT, OPEN_ATTEMPT),
        completed_at=T1 + timedelta(hours=1),
        reason="retry budget exhausted: HTTP 503",
    ),
    "canceled": Canceled(
        spec=PLAIN, version=2, attempts=(), canceled_at=T1, reason="canceled by the client"
    ),
    "canceled_after_attempts": Canceled(
        spec=FULL,
        version=6,
        attempts=(FAILED_ATTEMPT,),
        canceled_at=T1 + timedelta(minutes=5),
        reason="",
    ),
}


# Replays (format version 3 on): the spec names the call it was made from. Kept apart from
# CASES, whose files exist in every version: versions 1 and 2 cannot hold the link (checks
# of their own: tests/unit/orchestrator/test_stored_replay_golden.py).
REPLAY_OF = "01890a5d-ac96-774b-bcce-b302099a8057"
REPLAY_CASES: dict[str, ServiceCallState] = {
    "replay_scheduled": Scheduled(
        spec=replace(FULL, idempotency_key="replay-1", replay_of=REPLAY_OF),
        version=1,
        attempts=(),
        due_at=DUE,
        attempt=1,
        handoff_at=DUE - timedelta(seconds=2),
    ),
    "replay_succeeded": Succeeded(
        spec=replace(PLAIN, replay_of=REPLAY_OF),
        version=4,
        attempts=(SUCCEEDED_ATTEMPT,),
        completed_at=T1,
    ),
}


# #17's fields (format version 4 on): completion callbacks, max_lateness, and the links the
# mesh sets (the call a callback reports on, the schedule an occurrence belongs to). Kept
# apart like REPLAY_CASES (tests/unit/orchestrator/test_stored_call_features_golden.py).
CALLBACK_OF = "01890a5d-ac96-774b-bcce-b302099a8058"
SCHEDULE_ID = "sched-nightly-report"
CALL_FEATURE_CASES: dict[str, ServiceCallState] = {
    # A call asking for both callbacks and a lateness bound, with microseconds in it.
    "callbacks_and_max_lateness_scheduled": Scheduled(
        spec=replace(
            FULL,
            callback_url="https://hooks.example.test/done?ünï=1",
            failure_callback_url="http://hooks.example.test:8080/failed",
            max_lateness=timedelta(minutes=5, microseconds=7),
        ),
        version=2,
        attempts=(),
        due_at=DUE,
        attempt=1,
        handoff_at=DUE - timedelta(seconds=2),
    ),
    # Only a failure callback, ended FAILED.
    "failure_callback_failed": Failed(
        spec=replace(PLAIN, failure_callback_url="https://hooks.example.test/failed"),
        version=5,
        attempts=(FAILED_ATTEMPT,),
        completed_at=T1 + timedelta(hours=1),
        reason="attempt 1 failed (status 503), no attempts left (max_attempts=1)",
    ),
    # A completion callback the mesh made: it names its parent and has no callbacks.
    "callback_succeeded": Succeeded(
        spec=replace(PLAIN, idempotency_key=f"callback:{CALLBACK_OF}", callback_of=CALLBACK_OF),
        version=4,
        attempts=(SUCCEEDED_ATTEMPT,),
        completed_at=T1,
    ),
    # An occurrence of a schedule, with a lateness bound, handed off.
    "occurrence_dispatched": Dispatched(
        spec=replace(PLAIN, schedule_id=SCHEDULE_ID, max_lateness=timedelta(seconds=1)),
        version=3,
        attempts=(),
        due_at=DUE,
        attempt=1,
        dispatched_at=DUE - timedelta(seconds=2),
        lease_expires_at=DUE + timedelta(seconds=30),
    ),
    # A replay of a call with callbacks: both links' kinds in one spec.
    "replay_with_callback": Scheduled(
        spec=replace(PLAIN, replay_of=REPLAY_OF, callback_url="https://hooks.example.test/done"),
        version=1,
        attempts=(),
        due_at=DUE,
        attempt=1,
        handoff_at=None,
    ),
}


# #18's response rules (format version 5 on): which statuses count as success and which
# failures are retried. Kept apart like REPLAY_CASES
# (tests/unit/orchestrator/test_stored_response_rules_golden.py).
RESPONSE_RULES_CASES: dict[str, ServiceCallState] = {
    # Success statuses only (a range and a single status); the default retryable statuses.
    "success_statuses_scheduled": Scheduled(
        spec=replace(
            PLAIN, response_rules=ResponseRules(success_statuses=((200, 299), (404, 404)))
        ),
        version=1,
        attempts=(),
        due_at=DUE,
        attempt=1,
        handoff_at=DUE - timedelta(seconds=2),
    ),
    # Retryable statuses only, on a full call, ended FAILED on a status outside them.
    "retryable_statuses_failed": Failed(
        spec=replace(
            FULL, response_rules=ResponseRules(retryable_statuses=((409, 409), (429, 429)))
        ),
        version=4,
        attempts=(FAILED_ATTEMPT,),
        completed_at=T1 + timedelta(hours=1),
        reason="attempt 1 failed (status 503), not retryable",
    ),
    # Both lists, ranges given out of order (kept as given), with #17's fields beside them.
    "both_with_callback_succeeded": Succeeded(
        spec=replace(
            PLAIN,
            callback_url="https://hooks.example.test/done",
            response_rules=ResponseRules(
                success_statuses=((404, 404), (200, 204), (302, 302)),
                retryable_statuses=((500, 599), (409, 409)),
            ),
        ),
        version=3,
        attempts=(SUCCEEDED_ATTEMPT,),
        completed_at=T1,
    ),
}


# #18's queue fields (format version 5 on): the queue a call names, its ordering key, and why
# a Scheduled call is held by its queue. Kept apart like REPLAY_CASES
# (tests/unit/orchestrator/test_stored_queue_fields_golden.py).
QUEUE_FIELD_CASES: dict[str, ServiceCallState] = {
    # A call in a named queue with an ordering key, held while its queue is paused.
    "held_with_key_scheduled": Scheduled(
        spec=replace(FULL, queue_id="emails-eu", ordering_key="customer/42 ünï"),
        version=3,
        attempts=(),
        due_at=DUE,
        attempt=1,
        handoff_at=None,
        held_reason='held by paused queue "emails-eu"',
    ),
    # Only a queue, no key, waiting for its hand-off timer (not held).
    "queue_only_scheduled": Scheduled(
        spec=replace(PLAIN, queue_id="slow"),
        version=2,
        attempts=(),
        due_at=DUE,
        attempt=1,
        handoff_at=DUE - timedelta(seconds=2),
    ),
    # Only a key (default queue), released and handed off.
    "key_only_dispatched": Dispatched(
        spec=replace(PLAIN, ordering_key="k"),
        version=4,
        attempts=(),
        due_at=DUE,
        attempt=1,
        dispatched_at=DUE - timedelta(seconds=2),
        lease_expires_at=DUE + timedelta(seconds=30),
    ),
    # Held for its retry, the first attempt failed.
    "held_retry_scheduled": Scheduled(
        spec=replace(PLAIN, queue_id="q", ordering_key="k"),
        version=6,
        attempts=(FAILED_ATTEMPT,),
        due_at=DUE,
        attempt=2,
        handoff_at=None,
        held_reason='waiting for queue "q"\'s rate limit',
    ),
}


# Every case, and the format version that first could store it: the golden files of version
# N (state_v<N>/) hold each case stored since N or before, as version N wrote it
# (tests/unit/orchestrator/test_stored_state_golden.py).
STORED_SINCE: dict[str, tuple[int, ServiceCallState]] = {
    **{name: (1, state) for name, state in CASES.items()},
    **{name: (3, state) for name, state in REPLAY_CASES.items()},
    **{name: (4, state) for name, state in CALL_FEATURE_CASES.items()},
    **{name: (5, state) for name, state in RESPONSE_RULES_CASES.items()},
    **{name: (5, state) for name, state in QUEUE_FIELD_CASES.items()},
}


def stored_text(state: ServiceCallState) -> str:
    """A state as today's codec stores it, in the golden files' layout."""
    return json.dumps(codec.encode(state), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_stored(version: int, name: str) -> dict[str, Any]:
    """A case's golden file of a format version, parsed."""
    data = json.loads((GOLDEN / f"state_v{version}" / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data
