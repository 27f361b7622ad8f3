"""Retry decisions: whether a failed attempt is retried, and when; deterministic jitter."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.domain.model import (
    AttemptOutcome,
    ExecutionResult,
    ResponseRules,
    RetryPolicy,
    StatusRange,
)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry_at: datetime | None
    reason: str


def base_backoff(policy: RetryPolicy, attempt: int) -> timedelta:
    min_s = policy.min_backoff.total_seconds()
    max_s = policy.max_backoff.total_seconds()
    try:
        seconds = min_s * policy.multiplier ** (attempt - 1)
    except OverflowError:
        seconds = max_s
    return timedelta(seconds=min(max_s, seconds))


def jitter_fraction(service_call_id: str, attempt: int) -> float:
    # Derived, not drawn: a replay or another replica must compute the same retry time.
    digest = hashlib.sha256(f"{service_call_id}\x00{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def backoff(policy: RetryPolicy, service_call_id: str, attempt: int) -> timedelta:
    base = base_backoff(policy, attempt)
    # Jitter only adds: the delay is in [base, base·(1 + jitter)], capped at max_backoff. Taking
    # some off instead would retry before min_backoff; like Cloud Tasks, the API promises
    # retries between min_backoff and max_backoff (proto RetryPolicy.jitter).
    jittered = base * (1 + policy.jitter * jitter_fraction(service_call_id, attempt))
    return max(policy.min_backoff, min(policy.max_backoff, jittered))


def decide_retry(
    *,
    policy: RetryPolicy,
    service_call_id: str,
    attempt: int,
    result: ExecutionResult,
    outcome: AttemptOutcome,
    now: datetime,
    first_attempt_started_at: datetime,
    response_rules: ResponseRules | None = None,
) -> RetryDecision:
    failure = _describe(result, outcome)
    retryable = _retryable(policy, result, outcome, response_rules)
    if not retryable:
        return RetryDecision(None, f"attempt {attempt} failed ({failure}), not retryable")
    if attempt >= policy.max_attempts:
        return RetryDecision(
            None,
            f"attempt {attempt} failed ({failure}), no attempts left "
            f"(max_attempts={policy.max_attempts})",
        )
    delay = backoff(policy, service_call_id, attempt)
    if result.retry_after is not None:
        # The target knows best when to come back, but max_backoff stays the tenant's bound
        # on waiting: a buggy or hostile Retry-After must not park a call for a year.
        delay = max(delay, min(result.retry_after, policy.max_backoff))
    retry_at = now + delay
    if (
        policy.max_retry_duration is not None
        and retry_at > first_attempt_started_at + policy.max_retry_duration
    ):
        return RetryDecision(
            None,
            f"attempt {attempt} failed ({failure}), next retry at {retry_at.isoformat()} "
            f"would exceed max_retry_duration",
        )
    return RetryDecision(retry_at, f"attempt {attempt} failed ({failure}), retrying")


def _retryable(
    policy: RetryPolicy,
    result: ExecutionResult,
    outcome: AttemptOutcome,
    rules: ResponseRules | None,
) -> bool:
    if outcome is AttemptOutcome.TIMED_OUT:
        return True
    status = result.response_status
    if status is not None and rules is not None and rules.retryable_statuses is not None:
        # The call's own list replaces the default and the executor's judgement (which knows
        # only the default): a failing status outside it is final. Transport errors, which
        # have no status, are still judged by the executor below.
        return in_ranges(status, rules.retryable_statuses)
    return result.retryable or status in policy.retryable_status_codes


def in_ranges(status: int, ranges: tuple[StatusRange, ...]) -> bool:
    """Whether `status` is in one of the inclusive ranges."""
    return any(first <= status <= last for first, last in ranges)


def _describe(result: ExecutionResult, outcome: AttemptOutcome) -> str:
    if outcome is AttemptOutcome.TIMED_OUT:
        return "no result before the attempt deadline"
    parts = []
    if result.response_status is not None:
        parts.append(f"status {result.response_status}")
    if result.error:
        parts.append(result.error)
    return ", ".join(parts) or "unknown error"
