"""Key rotation of the sealing box, and the idempotency fingerprint key."""

from __future__ import annotations

import base64
import itertools
import os

import pytest

from mesh.secrets import (
    SecretBox,
    SecretError,
    fingerprint_key_from_env,
    key_version,
    sealed_bytes,
)

WHERE = b"acme\x00call-1\x00authorization"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def two_keys() -> tuple[bytes, bytes]:
    """Two random keys a box can hold together: their version bytes differ (two random keys
    share one about once in 256 draws, and a box refuses such a pair, which made the tests
    below fail now and then)."""
    old = os.urandom(32)
    while True:
        new = os.urandom(32)
        if key_version(new) != key_version(old):
            return old, new


def colliding_keys() -> tuple[bytes, bytes]:
    """Two different keys with the same derived version byte (found among 257 at most)."""
    seen: dict[int, bytes] = {}
    for n in itertools.count():
        key = n.to_bytes(32, "big")
        version = key_version(key)
        if version in seen:
            return seen[version], key
        seen[version] = key
    raise AssertionError("unreachable")


def test_after_a_rotation_what_the_old_key_sealed_still_opens() -> None:
    old, new = two_keys()
    before = SecretBox.from_env({"MESH_SECRET_KEY": b64(old)})
    sealed = before.seal(b"Bearer abc", WHERE)

    after = SecretBox.from_env({"MESH_SECRET_KEY": b64(new), "MESH_SECRET_KEY_OLD": b64(old)})

    assert after.open(sealed, WHERE) == b"Bearer abc"
    # New values are sealed with the new key: they open without the old one.
    assert (
        SecretBox.from_env({"MESH_SECRET_KEY": b64(new)}).open(after.seal(b"x", WHERE), WHERE)
        == b"x"
    )


def test_the_version_byte_names_the_key_whichever_variable_holds_it() -> None:
    old, new = two_keys()
    sealed = SecretBox.from_keys(old).seal(b"s", WHERE)

    assert sealed[0] == key_version(old)
    assert SecretBox.from_keys(new, old).open(sealed, WHERE) == b"s"


def test_a_value_sealed_with_the_former_fixed_version_byte_still_opens() -> None:
    old, new = two_keys()
    # Before versions were derived, every value carried version byte 1.
    legacy = SecretBox({1: old}, current=1).seal(b"s", WHERE)

    assert SecretBox.from_keys(old).open(legacy, WHERE) == b"s"
    assert SecretBox.from_keys(new, old).open(legacy, WHERE) == b"s"
    env = {"MESH_SECRET_KEY": b64(new), "MESH_SECRET_KEY_OLD": b64(old)}
    assert SecretBox.from_env(env).open(legacy, WHERE) == b"s"


def test_trying_every_key_still_refuses_a_value_bound_elsewhere_or_sealed_by_a_stranger() -> None:
    old, new = two_keys()
    box = SecretBox.from_keys(new, old)
    with pytest.raises(SecretError):
        box.open(SecretBox.from_keys(old).seal(b"s", WHERE), b"acme\x00call-2\x00authorization")
    with pytest.raises(SecretError):
        box.open(SecretBox.from_keys(os.urandom(32)).seal(b"s", WHERE), WHERE)
    with pytest.raises(SecretError):
        box.open(b"\x01short", WHERE)


def test_two_keys_with_one_version_byte_are_refused_with_a_way_out() -> None:
    first, second = colliding_keys()
    env = {"MESH_SECRET_KEY": b64(second), "MESH_SECRET_KEY_OLD": b64(first)}

    with pytest.raises(ValueError, match=r"MESH_SECRET_KEY_OLD.*generate another new key"):
        SecretBox.from_env(env)
    with pytest.raises(ValueError, match="same key version byte"):
        SecretBox.from_keys(second, first)


def test_the_same_key_given_twice_is_harmless() -> None:
    key = os.urandom(32)
    env = {"MESH_SECRET_KEY": b64(key), "MESH_SECRET_KEY_OLD": b64(key)}

    box = SecretBox.from_env(env)

    assert box.open(box.seal(b"s", WHERE), WHERE) == b"s"


def test_the_fingerprint_key_is_derived_not_the_sealing_key_itself() -> None:
    mesh_key = os.urandom(32)

    derived = fingerprint_key_from_env({"MESH_SECRET_KEY": b64(mesh_key)})

    assert len(derived) == 32
    assert derived != mesh_key
    assert derived == fingerprint_key_from_env({"MESH_SECRET_KEY": b64(mesh_key)})


def test_idempotency_key_takes_precedence_and_frees_the_mesh_key_to_rotate() -> None:
    mesh_key, other = os.urandom(32), os.urandom(32)
    before = fingerprint_key_from_env({"MESH_SECRET_KEY": b64(mesh_key)})

    # IDEMPOTENCY_KEY set to the current MESH_SECRET_KEY keeps every fingerprint as it was,
    # whatever MESH_SECRET_KEY becomes afterwards.
    pinned = {"MESH_SECRET_KEY": b64(other), "IDEMPOTENCY_KEY": b64(mesh_key)}
    assert fingerprint_key_from_env(pinned) == before
    assert fingerprint_key_from_env({"MESH_SECRET_KEY": b64(other)}) != before


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"MESH_SECRET_KEY": "not base64!"},
        {"MESH_SECRET_KEY": b64(bytes(32)), "IDEMPOTENCY_KEY": b64(bytes(8))},
    ],
)
def test_a_missing_or_malformed_fingerprint_key_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="KEY"):
        fingerprint_key_from_env(env)


def test_sealed_bytes_recognises_only_a_prefixed_base64_sealed_box() -> None:
    raw = SecretBox.from_keys(os.urandom(32)).seal(b"s", WHERE)
    stored = "sealed:" + base64.b64encode(raw).decode()

    assert sealed_bytes(stored, "sealed:") == raw
    assert sealed_bytes("Bearer abc", "sealed:") is None  # the client's own clear value
    assert sealed_bytes("sealed:not base64!", "sealed:") is None
    assert sealed_bytes("sealed:" + base64.b64encode(b"short").decode(), "sealed:") is None
