"""Response snippets: sensitive values are masked before the snippet is cut, in every style."""

from __future__ import annotations

import time

import pytest

from mesh.redaction import REDACTED, snippet

SECRET = "correct horse, battery staple"


@pytest.mark.parametrize("keep", [3, 10, 16, len(SECRET) - 1])
def test_a_secret_cut_at_the_limit_does_not_leak_its_head(keep: int) -> None:
    # Regression: the body was cut first, so `"password": "correct horse` lost its closing
    # quote, only its first word was recognised as the value, and the rest leaked.
    body = f'{{"user": "bob", "password": "{SECRET}", "n": 1}}'.encode()
    limit = body.index(SECRET.encode()) + keep

    text = snippet(body, limit)

    assert text.startswith('{"user": "bob", "password": "')
    for word in SECRET[:keep].replace(",", " ").split():
        assert len(word) < 2 or word not in text


def test_a_form_secret_cut_at_the_limit_does_not_leak_its_head() -> None:
    secret = "correct+horse%2C+battery"
    body = f"user=bob&password={secret}&n=1".encode()

    text = snippet(body, body.index(secret.encode()) + 10)

    assert "correct" not in text
    assert text == "user=bob&password=[REDACTED]"[: len(text)]


def test_a_quoted_secret_longer_than_the_lookahead_is_masked_to_the_end() -> None:
    body = b'{"token": "' + b"s" * 20_000

    assert "sss" not in snippet(body, 1024)


@pytest.mark.parametrize(
    ("body", "secret"),
    [
        (b"Authorization: Bearer eyJhbGciOi.abc-def_ghi\r\nAccept: */*", "eyJhbGciOi"),
        (b'{"authorization": "Bearer x9y8z7"}', "x9y8z7"),
        (b'{"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}', "dXNlcjpwYXNz"),
        (b"Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        (b'upstream said: curl -H "X-Whatever: Bearer t0k3n-abc" https://x', "t0k3n-abc"),
        (b"<login><user>bob</user><password>hunter2</password></login>", "hunter2"),
        (b"<secret>s3cr3t</secret>", "s3cr3t"),
        (b'<ns:token type="bearer">t0k3n</ns:token>', "t0k3n"),
        (b"<api_key>k3y</api_key>", "k3y"),
        (b"<Password><![CDATA[p<a>ss]]></Password>", "p<a>ss"),
        (b"<client_secret>\n  s3cr3t\n</client_secret>", "s3cr3t"),
        (b'<user password="hunter2"/>', "hunter2"),
        (b'{"password": "hunter2"}', "hunter2"),
        (b"{'access_token': 'abc123'}", "abc123"),
        (b"password=hunter2&user=bob", "hunter2"),
        (b"Set-Cookie: sid=abc123; Path=/", "abc123"),
    ],
)
def test_sensitive_values_are_masked(body: bytes, secret: str) -> None:
    text = snippet(body, 1024)

    assert secret not in text
    assert REDACTED in text


@pytest.mark.parametrize(
    "body",
    [
        b'{"author": "Jane", "status": "ok"}',
        b"<user>bob</user><token/><note>plain</note>",
        b"plain text, nothing to hide",
    ],
)
def test_ordinary_content_is_kept(body: bytes) -> None:
    assert snippet(body, 1024) == body.decode()


def test_the_snippet_stays_within_its_limit_and_cuts_on_a_character() -> None:
    body = ("é" * 600).encode()  # two bytes each

    text = snippet(body, 101)

    assert len(text.encode()) <= 101
    assert text == "é" * 50


@pytest.mark.parametrize(
    "body",
    [b"a" * 20_000, b"token" * 4_000, b"<token" * 4_000, b"-" * 20_000, b"<" + b"ab" * 10_000],
)
def test_masking_a_hostile_body_stays_cheap(body: bytes) -> None:
    # The patterns run over limit + lookahead bytes on the executor's event loop: a runaway
    # (quadratic) pattern would stall every tenant's sends.
    started = time.perf_counter()
    snippet(body, 4096)
    assert time.perf_counter() - started < 0.5
