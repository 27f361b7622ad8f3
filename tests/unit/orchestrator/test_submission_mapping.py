"""The submit request's mapping keeps what the client set, so validation sees it."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf.duration_pb2 import Duration

from orchestrator.mapping import DEFAULT_ATTEMPT_TIMEOUT, submission_from_proto
from orchestrator.ports import Submission
from servicecall.v1 import service_call_pb2 as api


def call(**durations: Duration) -> api.ServiceCall:
    policy = api.RetryPolicy()
    for name, value in durations.items():
        getattr(policy, name).CopyFrom(value)
    return api.ServiceCall(
        request=api.HttpRequest(url="https://example.test/"), retry_policy=policy
    )


def test_explicit_zero_durations_are_kept_not_replaced_by_defaults() -> None:
    zero = Duration(seconds=0)
    submission = submission_from_proto(
        "acme", call(min_backoff=zero, max_retry_duration=zero), None, header_key=None
    )
    assert isinstance(submission, Submission)
    assert submission.retry_policy.min_backoff == timedelta(0)
    assert submission.retry_policy.max_retry_duration == timedelta(0)


def test_unset_fields_take_the_defaults_and_negative_ones_are_violations() -> None:
    unset = submission_from_proto("acme", call(), None, header_key=None)
    assert isinstance(unset, Submission)
    assert unset.request.attempt_timeout == DEFAULT_ATTEMPT_TIMEOUT
    assert unset.retry_policy.max_retry_duration is None
    negative = submission_from_proto(
        "acme", call(max_backoff=Duration(seconds=-1)), None, header_key=None
    )
    assert isinstance(negative, list)
    assert [v.field for v in negative] == ["service_call.retry_policy.max_backoff"]
