"""#18's response rules in the domain: their validation (a table of good and bad rules, with
the field paths the API reports), their place in the fingerprint, and the retry decision with
and without `retryable_statuses`."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from orchestrator.domain.commands import RecordExecutionFailed
from orchestrator.domain.idempotency import fingerprint
from orchestrator.domain.model import AttemptOutcome, ResponseRules
from orchestrator.domain.retry import decide_retry, in_ranges
from orchestrator.domain.states import Dispatched, Failed, Scheduled
from orchestrator.domain.validation import (
    FieldViolation,
    Limits,
    validate_response_rules,
    validate_submission,
)

from .builders import (
    DUE,
    FINGERPRINT_KEY,
    SECOND,
    SPEC,
    T0,
    execution_result,
    http_request,
    retry_policy,
    running,
    step,
)

RULES = "service_call.response_rules"
SUCCESS = f"{RULES}.success_statuses"
RETRYABLE = f"{RULES}.retryable_statuses"


def rules(
    success: tuple[tuple[int, int], ...] = (), retryable: tuple[tuple[int, int], ...] | None = None
) -> ResponseRules:
    return ResponseRules(success_statuses=success, retryable_statuses=retryable)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(rules(((404, 404),)), [], id="one-status"),
        pytest.param(rules(((100, 599),)), [], id="every-status"),
        pytest.param(rules(((200, 299), (404, 404)), ((409, 409), (500, 599))), [], id="both"),
        pytest.param(rules(retryable=((400, 599),)), [], id="retryable-beside-default-2xx"),
        pytest.param(rules(((200, 204),), ((205, 205),)), [], id="adjacent-is-no-overlap"),
        pytest.param(rules(((99, 99),)), [f"{SUCCESS}[0].first"], id="below-100"),
        pytest.param(rules(((600, 600),)), [f"{SUCCESS}[0].first"], id="above-599"),
        pytest.param(rules(((0, 0),)), [f"{SUCCESS}[0].first"], id="zero"),
        pytest.param(
            rules(((200, 299), (404, 404), (500, 400))), [f"{SUCCESS}[2].last"], id="last<first"
        ),
        pytest.param(rules(((500, 600),)), [f"{SUCCESS}[0].last"], id="last-above-599"),
        pytest.param(rules(retryable=((429, -1),)), [f"{RETRYABLE}[0].last"], id="negative"),
        pytest.param(
            rules(((200, 299),), ((404, 404), (250, 250))),
            [f"{RETRYABLE}[1]"],
            id="retryable-inside-success",
        ),
        pytest.param(
            rules(retryable=((299, 300),)), [f"{RETRYABLE}[0]"], id="overlaps-default-success"
        ),
        pytest.param(
            rules(((404, 404),), ((200, 200), (400, 499))),
            [f"{RETRYABLE}[1]"],
            id="200-retryable-when-only-404-succeeds",
        ),
        pytest.param(rules(((200, 200),) * 21), [SUCCESS], id="too-many-success"),
        pytest.param(rules(retryable=((500, 500),) * 21), [RETRYABLE], id="too-many-retryable"),
        pytest.param(rules(((200, 200),) * 20, ((500, 500),) * 20), [], id="twenty-each"),
        pytest.param(
            rules(((1, 1),), ((700, 700),)), [f"{SUCCESS}[0].first", f"{RETRYABLE}[0].first"]
        ),
    ],
)
def test_rules_are_validated(given: ResponseRules, expected: list[str]) -> None:
    assert [v.field for v in validate_response_rules(given)] == expected


def test_no_rules_are_valid_and_the_limit_is_a_parameter() -> None:
    assert validate_response_rules(None) == []
    assert [
        v.field
        for v in validate_response_rules(rules(((200, 200),) * 3), Limits(max_status_ranges=2))
    ] == [SUCCESS]


def test_the_descriptions_say_what_is_wrong() -> None:
    assert validate_response_rules(rules(((200, 299),), ((204, 204),))) == [
        FieldViolation(
            f"{RETRYABLE}[0]", "overlaps the success statuses (200-299): a success is never retried"
        )
    ]
    [late] = validate_response_rules(rules(((404, 400),)))
    assert late.description == "must be at least first (404) and at most 599, or 0 for first alone"


def test_a_submission_reports_bad_rules_beside_its_other_violations() -> None:
    found = validate_submission(
        tenant_id="acme",
        request=http_request(),
        tags=(),
        idempotency_key="",
        retry_policy=retry_policy(),
        due_at=DUE,
        now=T0,
        response_rules=rules(((600, 600),)),
    )
    assert [v.field for v in found] == ["service_call.idempotency_key", f"{SUCCESS}[0].first"]


def _fp(response_rules: ResponseRules | None = None) -> str:
    return fingerprint(
        http_request(), (), retry_policy(), DUE, key=FINGERPRINT_KEY, response_rules=response_rules
    )


def test_rules_are_in_the_fingerprint_only_when_set() -> None:
    plain = fingerprint(http_request(), (), retry_policy(), DUE, key=FINGERPRINT_KEY)
    assert _fp(None) == plain
    variants = [
        _fp(rules()),
        _fp(rules(((404, 404),))),
        _fp(rules(((404, 405),))),
        _fp(rules(((404, 404), (200, 299)))),
        _fp(rules(((200, 299), (404, 404)))),
        _fp(rules(retryable=((404, 404),))),
        _fp(rules(retryable=())),
        _fp(rules(((404, 404),), ((409, 409),))),
        # Success [A] + retryable none vs. success [] + retryable [A]: apart.
        _fp(rules(((409, 409),))),
    ]
    assert len({plain, *variants}) == len(variants) + 1
    assert _fp(rules(((404, 404),))) == _fp(rules(((404, 404),)))


def test_in_ranges_is_inclusive_at_both_ends() -> None:
    ranges = ((400, 404), (409, 409))
    assert [s for s in range(398, 412) if in_ranges(s, ranges)] == [400, 401, 402, 403, 404, 409]
    assert not in_ranges(200, ())


def _decide(
    status: int | None,
    response_rules: ResponseRules | None,
    *,
    retryable: bool = False,
    outcome: AttemptOutcome = AttemptOutcome.FAILED,
    attempt: int = 1,
    error: str = "",
) -> bool:
    decision = decide_retry(
        policy=retry_policy(max_attempts=5),
        service_call_id="c-1",
        attempt=attempt,
        result=execution_result(ended_at=DUE, status=status, retryable=retryable, error=error),
        outcome=outcome,
        now=DUE,
        first_attempt_started_at=DUE,
        response_rules=response_rules,
    )
    return decision.retry_at is not None


# The executor's judgement of each status under the default (executor/domain/outcome.py).
EXECUTOR_SAYS = {408: True, 409: False, 429: True, 500: True, 501: True, 503: True, 404: False}


@pytest.mark.parametrize(
    ("status", "default", "with_409_429"),
    [
        (408, True, False),
        (409, False, True),
        (429, True, True),
        (500, True, False),
        (503, True, False),
        (404, False, False),
    ],
)
def test_retryable_statuses_replace_the_default_for_failing_statuses(
    status: int, default: bool, with_409_429: bool
) -> None:
    executor = EXECUTOR_SAYS[status]
    assert _decide(status, None, retryable=executor) is default
    # Rules without retryable statuses (success only) leave the default as it was.
    assert _decide(status, rules(((201, 201),)), retryable=executor) is default
    assert _decide(status, rules(retryable=((409, 409), (429, 429))), retryable=executor) is (
        with_409_429
    )


def test_timeouts_and_transport_errors_are_retried_whatever_the_rules() -> None:
    only_409 = rules(retryable=((409, 409),))
    assert _decide(None, only_409, retryable=True, error="connection_error")
    assert _decide(None, only_409, retryable=True, error="timeout")
    assert _decide(None, only_409, outcome=AttemptOutcome.TIMED_OUT)
    # What the executor says is final stays final (e.g. max_lateness_exceeded).
    assert not _decide(None, only_409, retryable=False, error="max_lateness_exceeded")


def test_a_retryable_status_still_stops_when_no_attempts_are_left() -> None:
    only_409 = rules(retryable=((409, 409),))
    assert _decide(409, only_409, attempt=4)
    assert not _decide(409, only_409, attempt=5)


def test_the_call_s_rules_reach_the_decision_through_decide() -> None:
    spec = replace(
        SPEC,
        retry_policy=retry_policy(max_attempts=3),
        response_rules=rules(retryable=((429, 429),)),
    )
    busy = execution_result(ended_at=DUE + SECOND, status=503, retryable=True)
    failed = step(running(spec), RecordExecutionFailed(attempt=1, result=busy), DUE + SECOND)
    assert isinstance(failed, Failed)
    assert failed.reason == "attempt 1 failed (status 503), not retryable"
    limited = execution_result(ended_at=DUE + SECOND, status=429, retryable=True)
    again = step(running(spec), RecordExecutionFailed(attempt=1, result=limited), DUE + SECOND)
    # Retried: the next attempt is planned (handed off at once when it is that close).
    assert isinstance(again, Scheduled | Dispatched) and again.attempt == 2
    assert again.due_at >= DUE + SECOND + timedelta(seconds=1)
