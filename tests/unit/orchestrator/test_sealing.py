"""Secret headers are sealed before storage and open only for the right call and header."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from mesh.secrets import SecretBox, SecretError, header_binding
from orchestrator.domain.model import HttpRequest
from orchestrator.sealing import SEALED_PREFIX, seal_secret_headers, split_sealed


@pytest.fixture
def box() -> SecretBox:
    return SecretBox({1: os.urandom(32)}, current=1)


def request(*headers: tuple[str, str]) -> HttpRequest:
    return HttpRequest("POST", "https://example.test/", headers, b"", timedelta(seconds=5))


def test_secret_headers_are_sealed_and_others_kept(box: SecretBox) -> None:
    sealed = seal_secret_headers(
        request(("Authorization", "Bearer abc"), ("X-Api-Key", "k1"), ("Accept", "text/plain")),
        "acme",
        "call-1",
        box,
    )
    values = dict(sealed.headers)
    assert values["Accept"] == "text/plain"
    for name in ("Authorization", "X-Api-Key"):
        assert values[name].startswith(SEALED_PREFIX)
        assert "abc" not in values[name] and "k1" not in values[name]


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
