"""Secret headers are sealed before storage and open only for the right call and header."""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from datetime import timedelta

import pytest

from mesh.secrets import SecretBox, SecretError, header_binding
from mesh.topics import Topics
from orchestrator.domain.commands import SubmitServiceCall
from orchestrator.domain.decide import decide
from orchestrator.domain.model import SEALED_PREFIX, HttpRequest
from orchestrator.mapping import outbox_messages, split_sealed
from orchestrator.service_layer.sealing import seal_secret_headers
from servicecall.internal.v1 import events_pb2 as pb
from tests.unit.domain.builders import T0, TIMING, apply, events_of, service_call_spec


@pytest.fixture
def box() -> SecretBox:
    return SecretBox({1: os.urandom(32)}, current=1)


def request(*headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest("POST", "https://example.test/", headers, b"", timedelta(seconds=5))


def test_secret_headers_are_sealed_and_others_kept(box: SecretBox) -> None:
    # The secrets are long on purpose: a sealed value is random base64, and a short secret
    # ("k1") turns up in it by chance about once in a few hundred runs.
    token, key = "Bearer tok-9f2c7e1d4b", "key-5a8e3c0f6d"
    sealed = seal_secret_headers(
        request(("Authorization", token), ("X-Api-Key", key), ("Accept", "text/plain")),
        "acme",
        "call-1",
        box,
    )
    values = dict(sealed.headers)
    assert values["Accept"] == "text/plain"
    for name in ("Authorization", "X-Api-Key"):
        assert values[name].startswith(SEALED_PREFIX)
        assert token not in values[name] and key not in values[name]
        raw = base64.b64decode(values[name].removeprefix(SEALED_PREFIX))
        assert token.encode() not in raw and key.encode() not in raw


def test_sealed_headers_open_only_where_they_belong(box: SecretBox) -> None:
    sealed = seal_secret_headers(request(("Authorization", "Bearer abc")), "acme", "call-1", box)
    clear, by_name = split_sealed(sealed.headers)
    assert clear == ()
    value = by_name["Authorization"]
    assert box.open(value, header_binding("acme", "call-1", "authorization")) == b"Bearer abc"
    with pytest.raises(SecretError):
        box.open(value, header_binding("acme", "call-2", "authorization"))
    with pytest.raises(SecretError):
        box.open(value, header_binding("other", "call-1", "authorization"))
    with pytest.raises(SecretError):
        SecretBox({1: os.urandom(32)}, current=1).open(
            value, header_binding("acme", "call-1", "authorization")
        )


def test_a_rotated_key_still_opens_what_the_old_one_sealed() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed = SecretBox({0: old}, current=0).seal(b"s", b"where")
    assert SecretBox({0: old, 1: new}, current=1).open(sealed, b"where") == b"s"


def test_a_clear_header_that_looks_sealed_is_sent_as_it_came(box: SecretBox) -> None:
    # Regression: any value starting with "sealed:" was decoded as ciphertext, and
    # binascii.Error stopped the orchestrator's consumer at hand-off.
    stored = seal_secret_headers(
        request(("X-Note", "sealed:abc"), ("Authorization", "Bearer abc")), "acme", "call-1", box
    )

    clear, by_name = split_sealed(stored.headers)

    assert clear == (("X-Note", "sealed:abc"),)
    assert set(by_name) == {"Authorization"}


def test_a_call_whose_header_looks_sealed_is_handed_off_with_it_in_clear(box: SecretBox) -> None:
    spec = service_call_spec(request=request(("X-Note", "sealed:abc")))
    spec = replace(spec, request=seal_secret_headers(spec.request, "acme", "call-1", box))
    events = events_of(decide(None, SubmitServiceCall(spec=spec, due_at=T0), T0, TIMING))

    sent = outbox_messages(None, apply(None, events), events, "corr", Topics.with_prefix(""), 256)

    (order,) = [
        envelope.execution_requested
        for envelope in (pb.Envelope.FromString(m.value) for m in sent)
        if envelope.WhichOneof("payload") == "execution_requested"
    ]
    assert dict(order.request.headers) == {"X-Note": "sealed:abc"}
    assert dict(order.sealed_headers) == {}


@pytest.mark.parametrize("value", ["Bearer abc", "sealed:abc", "sealed:", "sealed:!!notbase64"])
def test_a_secret_named_header_that_was_never_sealed_passes_through_in_clear(value: str) -> None:
    # A header whose name became secret after its call was stored holds the client's value.
    assert split_sealed((("X-Session-Token", value),)) == ((("X-Session-Token", value),), {})
