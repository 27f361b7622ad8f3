"""Idempotency ids and request fingerprints: stable, unambiguous, sensitive to every field."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta, timezone

import pytest

from orchestrator.domain.idempotency import (
    SERVICE_CALL_NAMESPACE,
    DueSpec,
    fingerprint,
    service_call_id_for,
)
from orchestrator.domain.model import HttpRequest, RetryPolicy

from .builders import DUE, FINGERPRINT_KEY, http_request, retry_policy

TAGS = frozenset({"billing", "eu"})


def fp(
    request: HttpRequest | None = None,
    tags: frozenset[str] = TAGS,
    policy: RetryPolicy | None = None,
    due: DueSpec = DUE,
    key: bytes = FINGERPRINT_KEY,
) -> str:
    return fingerprint(request or http_request(), tags, policy or retry_policy(), due, key=key)


def test_service_call_id_is_a_uuid5_of_tenant_and_key() -> None:
    derived = service_call_id_for("acme", "order-42")

    assert derived == service_call_id_for("acme", "order-42")
    assert derived == str(uuid.uuid5(SERVICE_CALL_NAMESPACE, "acme\x00order-42"))
    assert uuid.UUID(derived).version == 5
    assert derived == derived.lower()


def test_service_call_id_depends_on_the_tenant_and_is_unambiguous() -> None:
    assert service_call_id_for("acme", "k") != service_call_id_for("globex", "k")
    assert service_call_id_for("ab", "c") != service_call_id_for("a", "bc")


def test_fingerprint_is_stable() -> None:
    assert fp() == fp()
    assert len(fp()) == 64
    int(fp(), 16)


def test_header_names_compare_case_insensitively() -> None:
    lower = http_request(headers=(("content-type", "application/json"),))
    upper = http_request(headers=(("CONTENT-TYPE", "application/json"),))

    assert fp(lower) == fp(upper)


def test_order_of_different_header_names_does_not_matter() -> None:
    one = http_request(headers=(("a", "1"), ("b", "2")))
    other = http_request(headers=(("b", "2"), ("a", "1")))

    assert fp(one) == fp(other)


def test_order_of_repeated_header_names_matters() -> None:
    one = http_request(headers=(("accept", "a"), ("accept", "b")))
    other = http_request(headers=(("accept", "b"), ("accept", "a")))

    assert fp(one) != fp(other)


def test_encoding_is_unambiguous() -> None:
    assert fp(http_request(headers=(("a", "bc"),))) != fp(http_request(headers=(("ab", "c"),)))
    assert fp(tags=frozenset({"ab", "c"})) != fp(tags=frozenset({"a", "bc"}))
    assert fp(http_request(url="https://x.example/a", body=b"b")) != fp(
        http_request(url="https://x.example/ab", body=b"")
    )


def test_same_delay_is_the_same_request_and_differs_from_an_absolute_time() -> None:
    delay = timedelta(seconds=10)

    assert fp(due=delay) == fp(due=timedelta(seconds=10))
    assert fp(due=delay) != fp(due=timedelta(seconds=11))
    assert fp(due=delay) != fp(due=DUE)


def test_the_same_instant_in_another_zone_is_the_same_due_time() -> None:
    shifted = DUE.astimezone(timezone(timedelta(hours=2)))

    assert fp(due=shifted) == fp(due=DUE)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(lambda: fp(request=http_request(method="PUT")), id="method"),
        pytest.param(
            lambda: fp(request=http_request(url="https://api.example.com/hooks/2")), id="url"
        ),
        pytest.param(
            lambda: fp(request=http_request(headers=(("Content-Type", "text/plain"),))),
            id="header-value",
        ),
        pytest.param(lambda: fp(request=http_request(headers=())), id="no-headers"),
        pytest.param(lambda: fp(request=http_request(body=b"{}")), id="body"),
        pytest.param(
            lambda: fp(request=http_request(attempt_timeout=timedelta(seconds=11))),
            id="attempt_timeout",
        ),
        pytest.param(lambda: fp(tags=frozenset({"billing"})), id="tags"),
        pytest.param(lambda: fp(policy=retry_policy(max_attempts=6)), id="max_attempts"),
        pytest.param(
            lambda: fp(policy=retry_policy(max_retry_duration=timedelta(hours=1))),
            id="max_retry_duration",
        ),
        pytest.param(
            lambda: fp(policy=retry_policy(min_backoff=timedelta(seconds=2))), id="min_backoff"
        ),
        pytest.param(
            lambda: fp(policy=retry_policy(max_backoff=timedelta(hours=2))), id="max_backoff"
        ),
        pytest.param(lambda: fp(policy=retry_policy(multiplier=3.0)), id="multiplier"),
        pytest.param(lambda: fp(policy=retry_policy(jitter=0.0)), id="jitter"),
        pytest.param(
            lambda: fp(policy=retry_policy(retryable_status_codes=frozenset({503}))),
            id="retryable_status_codes",
        ),
        pytest.param(lambda: fp(due=DUE + timedelta(microseconds=1)), id="due"),
    ],
)
def test_every_field_changes_the_fingerprint(changed: Callable[[], str]) -> None:
    assert changed() != fp()


def test_naive_due_time_is_a_programmer_error() -> None:
    with pytest.raises(TypeError):
        fp(due=DUE.replace(tzinfo=None))


# A request with a Basic-auth password ("user:hunter2"), and the fingerprint the unkeyed
# SHA-256 of the code before the keyed hash gave for it (with TAGS, the default policy and
# DUE). Anyone reading the stored row could confirm a guessed password against that value.
WITH_PASSWORD = http_request(headers=(("Authorization", "Basic dXNlcjpodW50ZXIy"),))
UNKEYED_SHA256 = "9ce155f4de5a7886a285cbdc86cc05fb24b9c01031bb668351509a8256c640cc"


def test_the_fingerprint_is_keyed_not_a_plain_hash_of_the_request() -> None:
    assert fp(WITH_PASSWORD) != UNKEYED_SHA256
    assert fp(WITH_PASSWORD, key=b"another key") != UNKEYED_SHA256


def test_the_same_request_under_the_same_key_has_the_same_fingerprint() -> None:
    assert fp(WITH_PASSWORD, key=b"k1") == fp(WITH_PASSWORD, key=b"k1")


def test_another_key_gives_another_fingerprint() -> None:
    assert fp(WITH_PASSWORD, key=b"k1") != fp(WITH_PASSWORD, key=b"k2")
    assert fp(key=b"k1") != fp(key=b"k2")


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        fp(key=b"")
