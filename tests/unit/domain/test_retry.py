"""Backoff and retry decisions: monotone up to the cap, bounded deterministic jitter."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.model import AttemptOutcome, ExecutionResult, RetryPolicy
from orchestrator.domain.retry import (
    backoff,
    base_backoff,
    decide_retry,
    jitter_fraction,
)

from .builders import DUE, SECOND, execution_result, retry_policy

policies = st.builds(
    lambda min_ms, factor, multiplier, jitter: retry_policy(
        min_backoff=timedelta(milliseconds=min_ms),
        max_backoff=timedelta(milliseconds=min_ms * factor),
        multiplier=multiplier,
        jitter=jitter,
    ),
    st.integers(1, 60_000),
    st.integers(1, 10_000),
    st.floats(1, 1000),
    st.floats(0, 1),
)
attempts = st.integers(1, 100)
ids = st.text(min_size=1, max_size=40)
BUSY = execution_result(ended_at=DUE, status=503)


@settings(max_examples=100)
@given(policies, attempts)
def test_base_backoff_is_monotone_up_to_the_cap(policy: RetryPolicy, attempt: int) -> None:
    this, following = base_backoff(policy, attempt), base_backoff(policy, attempt + 1)

    assert policy.min_backoff <= this <= following <= policy.max_backoff


def test_base_backoff_grows_by_the_multiplier_then_stops_at_the_cap() -> None:
    policy = retry_policy(min_backoff=SECOND, max_backoff=10 * SECOND, multiplier=2.0)

    assert [base_backoff(policy, n).total_seconds() for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_a_huge_multiplier_saturates_instead_of_overflowing() -> None:
    policy = retry_policy(multiplier=1e300)

    assert base_backoff(policy, 100) == policy.max_backoff


@settings(max_examples=100)
@given(policies, ids, attempts)
def test_jitter_is_bounded_and_deterministic(
    policy: RetryPolicy, service_call_id: str, attempt: int
) -> None:
    delay = backoff(policy, service_call_id, attempt)
    base = base_backoff(policy, attempt)

    assert delay == backoff(policy, service_call_id, attempt)
    assert base <= delay <= min(policy.max_backoff, base * (1 + policy.jitter))
    assert 0 <= jitter_fraction(service_call_id, attempt) < 1


@settings(max_examples=300)
@given(policies, ids, attempts)
def test_no_retry_comes_before_min_backoff_or_after_max_backoff(
    policy: RetryPolicy, service_call_id: str, attempt: int
) -> None:
    # Cloud Tasks' promise, and the proto's: retries come between min_backoff and max_backoff.
    assert policy.min_backoff <= backoff(policy, service_call_id, attempt) <= policy.max_backoff
    retry_in = delay_after(policy, call=service_call_id)
    assert retry_in is not None
    assert policy.min_backoff <= retry_in <= policy.max_backoff


def test_default_jitter_never_retries_before_a_3_s_min_backoff() -> None:
    # Regression: subtractive jitter retried after 2.45-2.99 s with minBackoff 3 s.
    policy = retry_policy(min_backoff=3 * SECOND)

    delays = [backoff(policy, f"call-{n}", 1) for n in range(200)]

    assert min(delays) >= 3 * SECOND
    assert max(delays) <= 3 * SECOND * (1 + policy.jitter)


def test_jitter_spreads_calls_that_fail_together() -> None:
    policy = retry_policy(jitter=0.5)

    delays = {backoff(policy, f"call-{n}", 1) for n in range(50)}

    assert len(delays) > 40


def delay_after(
    policy: RetryPolicy, result: ExecutionResult = BUSY, call: str = "call-1"
) -> timedelta | None:
    decision = decide_retry(
        policy=policy,
        service_call_id=call,
        attempt=1,
        result=result,
        outcome=AttemptOutcome.FAILED,
        now=DUE,
        first_attempt_started_at=DUE,
    )
    return None if decision.retry_at is None else decision.retry_at - DUE


def test_retry_after_longer_than_the_backoff_is_honoured() -> None:
    policy = retry_policy(min_backoff=SECOND, jitter=0.0)

    busy = execution_result(ended_at=DUE, status=503, retry_after=timedelta(seconds=30))

    assert delay_after(policy, busy) == timedelta(seconds=30)


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    policy = retry_policy(min_backoff=10 * SECOND, jitter=0.0)

    busy = execution_result(ended_at=DUE, status=503, retry_after=SECOND)

    assert delay_after(policy, busy) == 10 * SECOND


def test_retry_after_is_capped_by_max_backoff() -> None:
    policy = retry_policy(max_backoff=timedelta(minutes=5))

    busy = execution_result(ended_at=DUE, status=503, retry_after=timedelta(days=365))

    assert delay_after(policy, busy) == timedelta(minutes=5)


def test_retryable_status_from_the_policy_retries_even_if_the_executor_said_no() -> None:
    policy = retry_policy(retryable_status_codes=frozenset({503}))

    assert delay_after(policy, execution_result(ended_at=DUE, status=503)) is not None
    assert delay_after(policy, execution_result(ended_at=DUE, status=404)) is None
    connection_error = execution_result(ended_at=DUE, status=None, retryable=True)
    assert delay_after(policy, connection_error) is not None


def test_attempts_are_counted_including_the_first() -> None:
    def decide_after(attempt: int, max_attempts: int) -> bool:
        decision = decide_retry(
            policy=retry_policy(max_attempts=max_attempts),
            service_call_id="call-1",
            attempt=attempt,
            result=BUSY,
            outcome=AttemptOutcome.FAILED,
            now=DUE,
            first_attempt_started_at=DUE,
        )
        return decision.retry_at is not None

    assert not decide_after(1, max_attempts=1)
    assert decide_after(2, max_attempts=3)
    assert not decide_after(3, max_attempts=3)


def test_timeouts_are_retryable() -> None:
    silent = execution_result(ended_at=DUE, status=None, retryable=False)

    decision = decide_retry(
        policy=retry_policy(),
        service_call_id="call-1",
        attempt=1,
        result=silent,
        outcome=AttemptOutcome.TIMED_OUT,
        now=DUE,
        first_attempt_started_at=DUE,
    )

    assert decision.retry_at is not None


@settings(max_examples=100)
@given(policies, attempts, st.integers(1, 3600))
def test_max_retry_duration_is_never_exceeded(
    policy: RetryPolicy, attempt: int, window_s: int
) -> None:
    window = timedelta(seconds=window_s)
    bounded = replace(policy, max_attempts=101, max_retry_duration=window)
    first_started = DUE - timedelta(seconds=window_s // 2)

    decision = decide_retry(
        policy=bounded,
        service_call_id="call-1",
        attempt=attempt,
        result=BUSY,
        outcome=AttemptOutcome.FAILED,
        now=DUE,
        first_attempt_started_at=first_started,
    )

    if decision.retry_at is not None:
        assert decision.retry_at <= first_started + window
    else:
        assert "max_retry_duration" in decision.reason
