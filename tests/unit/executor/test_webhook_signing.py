"""Webhook signatures: known answer, rotation, and verification by the spec and the library."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import standardwebhooks

from executor.adapters.signing_keys import SigningKeysFile, load_signing_keys
from executor.domain.signing import (
    SigningSecret,
    parse_signing_keys,
    sign,
    signature_headers,
)
from tests.fakes.executor.webhook_verifier import VerificationError, verify


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


AT = datetime(2030, 1, 2, 3, 4, 5, 900_000, tzinfo=UTC)
BODY = b'{"order": 42, "note": "caf\xc3\xa9"}'


def test_the_spec_example_signature() -> None:
    # The example used across the Standard Webhooks spec and its libraries' tests.
    secret = SigningSecret.parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify_with_the_spec_verifier_and_the_reference_library() -> None:
    secret = new_secret()
    headers = dict(signature_headers([SigningSecret.parse(secret)], "call-1", AT, BODY))
    assert headers["webhook-id"] == "call-1"
    assert headers["webhook-timestamp"] == str(int(AT.timestamp()))  # whole seconds, floored
    verify(secret, headers, BODY, now=AT.timestamp())
    library = standardwebhooks.Webhook(secret)
    # The library checks the timestamp against its own clock: sign "now" for it.
    now = datetime.now(UTC)
    fresh = dict(signature_headers([SigningSecret.parse(secret)], "call-1", now, BODY))
    assert library.verify(BODY, fresh) == json.loads(BODY)


def test_during_rotation_either_secret_verifies() -> None:
    new, old = new_secret(), new_secret()
    now = datetime.now(UTC)
    headers = dict(
        signature_headers([SigningSecret.parse(new), SigningSecret.parse(old)], "c", now, BODY)
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        verify(secret, headers, BODY, now=now.timestamp())
        standardwebhooks.Webhook(secret).verify(BODY, headers)
    with pytest.raises(VerificationError):
        verify(new_secret(), headers, BODY, now=now.timestamp())
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(BODY, headers)


@pytest.mark.parametrize(
    ("body", "msg_id", "shift"),
    [
        (BODY + b" ", "call-1", 0),  # body changed
        (BODY, "call-2", 0),  # id changed
        (BODY, "call-1", 1),  # timestamp changed
    ],
)
def test_tampering_fails_verification(body: bytes, msg_id: str, shift: int) -> None:
    secret = new_secret()
    headers = dict(signature_headers([SigningSecret.parse(secret)], "call-1", AT, BODY))
    headers["webhook-id"] = msg_id
    headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) + shift)
    with pytest.raises(VerificationError):
        verify(secret, headers, body, now=AT.timestamp())


def test_binary_bodies_are_signed_as_sent() -> None:
    secret = new_secret()
    body = bytes(range(256))
    headers = dict(signature_headers([SigningSecret.parse(secret)], "c", AT, body))
    verify(secret, headers, body, now=AT.timestamp())


def test_a_stale_timestamp_is_refused_by_both_verifiers() -> None:
    secret = new_secret()
    old = datetime.now(UTC) - timedelta(minutes=10)
    headers = dict(signature_headers([SigningSecret.parse(secret)], "c", old, BODY))
    with pytest.raises(VerificationError):
        verify(secret, headers, BODY, now=datetime.now(UTC).timestamp())
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(BODY, headers)


def test_no_secrets_no_headers() -> None:
    assert signature_headers([], "c", AT, BODY) == ()


@pytest.mark.parametrize(
    "text",
    [
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(bytes(65)).decode(),
        "whsec_not base64!!",
        "",
    ],
)
def test_bad_secrets_are_refused_without_quoting_them(text: str) -> None:
    with pytest.raises(ValueError) as error:
        SigningSecret.parse(text)
    if text.removeprefix("whsec_"):
        assert text.removeprefix("whsec_") not in str(error.value)


def test_a_secret_never_shows_in_its_repr() -> None:
    secret = SigningSecret.parse(new_secret())
    assert secret.key.hex() not in repr(secret)
    assert repr(secret.key) not in repr(secret)


def test_signing_keys_document() -> None:
    a, b = new_secret(), new_secret()
    keys = parse_signing_keys({"acme": [a, b], "solo": a})
    assert [len(v) for v in keys.values()] == [2, 1]
    bad: object
    for bad in (
        [],
        {"acme": [a, b, a]},
        {"acme": 3},
        {"": [a]},
        {"acme": ["whsec_AAAA"]},
    ):
        with pytest.raises(ValueError) as error:
            parse_signing_keys(bad)
        assert a[6:] not in str(error.value)


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, document: object) -> None:
    # Replaced by rename, as an operator (or the kubelet) would.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document))
    tmp.replace(path)


def test_the_keys_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ticks = Ticks()
    keys = SigningKeysFile(path, check_every=1.0, monotonic=ticks)
    assert keys.secrets_for("acme") == ()  # no file: nobody signs

    first, second = new_secret(), new_secret()
    write(path, {"acme": [first]})
    assert keys.secrets_for("acme") == ()  # not checked again within a second
    ticks.now = 1.0
    assert keys.secrets_for("acme") == (SigningSecret.parse(first),)

    write(path, {"acme": [second, first]})  # rotation: the new one first, the old one kept
    ticks.now = 2.0
    assert keys.secrets_for("acme") == (SigningSecret.parse(second), SigningSecret.parse(first))

    path.write_text("{ not json")  # a bad edit keeps the last good keys
    ticks.now = 3.0
    assert len(keys.secrets_for("acme")) == 2

    path.unlink()
    ticks.now = 4.0
    assert keys.secrets_for("acme") == ()


def test_loading_a_bad_file_names_the_file_not_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    secret = "whsec_" + base64.b64encode(b"too short").decode()
    path.write_text(json.dumps({"acme": [secret]}))
    with pytest.raises(ValueError) as error:
        load_signing_keys(path)
    assert str(path) in str(error.value) and secret[6:] not in str(error.value)
