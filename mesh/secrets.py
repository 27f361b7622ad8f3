"""Sealing of secret values (secret request headers) at rest and on Kafka: AES-256-GCM.

One key for the mesh, from the environment (`MESH_SECRET_KEY`: 32 bytes, base64). A sealed
value is `version byte || 12-byte nonce || ciphertext+tag`; the associated data binds it to
where it belongs (tenant, call, header name), so a sealed value copied onto another call or
header does not open.

Rotation: the version byte is derived from the key itself (`key_version`), so a value names the
key that sealed it whichever environment variable holds that key today. To rotate, start every
service with the new key in `MESH_SECRET_KEY` and the previous one in `MESH_SECRET_KEY_OLD`:
new values are sealed with the new key, older ones still open with the old. Nothing re-seals
stored values, so keep the old key until every call sealed before the rotation is terminal.
Two keys whose version bytes collide (1 in 256) are refused at start-up: draw another new key.
Values sealed before versions were derived carry the fixed byte 1; `open` tries every key it
knows when the named one is unknown or fails (AES-GCM authenticates, so a wrong key cannot
yield a wrong plaintext), so those open too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
_TAG_BYTES = 16
# The shortest sealed value: version byte, nonce and tag around an empty plaintext.
SEALED_MIN_BYTES = 1 + _NONCE_BYTES + _TAG_BYTES


def sealed_bytes(text: str, prefix: str) -> bytes | None:
    """The sealed value a stored header holds (`prefix` + base64 of a sealed box), or None
    when the text is not one: a header whose name became secret after its call was stored
    holds the client's clear value. Never raises."""
    if not text.startswith(prefix):
        return None
    try:
        raw = base64.b64decode(text[len(prefix) :], validate=True)
    except ValueError:  # binascii.Error is a ValueError
        return None
    return raw if len(raw) >= SEALED_MIN_BYTES else None


# Domain separation: the version byte must say nothing useful about the key beyond itself, and
# never coincide with another use of a hash over the same key.
_VERSION_LABEL = b"servicecall-mesh/secret-key-version/v1\x00"


class SecretError(ValueError):
    """A sealed value could not be opened: wrong key, tampered, or bound elsewhere."""


def key_version(key: bytes) -> int:
    """The version byte a value sealed with `key` carries."""
    return hashlib.sha256(_VERSION_LABEL + key).digest()[0]


class SecretBox:
    def __init__(self, keys: Mapping[int, bytes], current: int) -> None:
        if current not in keys:
            raise ValueError("the current key version must be one of the keys")
        for version, key in keys.items():
            if not 0 <= version <= 255 or len(key) != 32:
                raise ValueError("keys are 32 bytes, versions 0..255")
        self._keys = {v: AESGCM(k) for v, k in keys.items()}
        self._current = current

    @classmethod
    def from_keys(cls, current: bytes, *older: bytes) -> SecretBox:
        """Seals with `current`, opens with it and any `older` key; versions from the keys."""
        return cls._from_named([("current key", current), *(("older key", k) for k in older)])

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SecretBox:
        """`MESH_SECRET_KEY` (seals and opens) and optionally `MESH_SECRET_KEY_OLD` (still
        opened) after a rotation."""
        raw = environ.get("MESH_SECRET_KEY", "")
        if not raw:
            raise ValueError("MESH_SECRET_KEY must be set (32 random bytes, base64)")
        named = [("MESH_SECRET_KEY", _decode_key(raw, "MESH_SECRET_KEY"))]
        if environ.get("MESH_SECRET_KEY_OLD"):
            old = _decode_key(environ["MESH_SECRET_KEY_OLD"], "MESH_SECRET_KEY_OLD")
            named.append(("MESH_SECRET_KEY_OLD", old))
        return cls._from_named(named)

    @classmethod
    def _from_named(cls, named: list[tuple[str, bytes]]) -> SecretBox:
        keys: dict[int, bytes] = {}
        holder: dict[int, str] = {}
        for name, key in named:
            if len(key) != 32:
                raise ValueError(f"{name} must be 32 bytes, not {len(key)}")
            version = key_version(key)
            if version in keys and keys[version] != key:
                raise ValueError(
                    f"{name} and {holder[version]} derive the same key version byte "
                    f"({version}), so sealed values could not say which key to use: "
                    f"generate another new key (head -c 32 /dev/urandom | base64)"
                )
            keys[version] = key  # the same key given twice is harmless
            holder.setdefault(version, name)
        return cls(keys, current=key_version(named[0][1]))

    def seal(self, plaintext: bytes, bound_to: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self._current].encrypt(nonce, plaintext, bound_to)
        return bytes([self._current]) + nonce + sealed

    def open(self, sealed: bytes, bound_to: bytes) -> bytes:
        if len(sealed) < SEALED_MIN_BYTES:
            raise SecretError("not a sealed value of this mesh")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        named = self._keys.get(sealed[0])
        # The key the version byte names first; then the others, for values whose byte does
        # not name their key (sealed when every value carried version 1).
        candidates = ([named] if named else []) + [k for k in self._keys.values() if k is not named]
        for key in candidates:
            try:
                return key.decrypt(nonce, body, bound_to)
            except InvalidTag:  # the only failure AESGCM.decrypt has for well-formed input
                continue
        raise SecretError("sealed value does not open here")


_FINGERPRINT_LABEL = b"servicecall-mesh/idempotency-fingerprint/v1"


def fingerprint_key_from_env(environ: Mapping[str, str]) -> bytes:
    """The key of the idempotency fingerprints (orchestrator/domain/idempotency.py), derived
    from `IDEMPOTENCY_KEY` if set, else from `MESH_SECRET_KEY` (both 32 bytes, base64).

    A changed key changes every fingerprint: a same-key resubmit of a call stored before the
    change is then seen as a conflict. Setting `IDEMPOTENCY_KEY` to the current
    `MESH_SECRET_KEY` value keeps the fingerprints as they are and frees that key to rotate.
    """
    name = "IDEMPOTENCY_KEY" if environ.get("IDEMPOTENCY_KEY") else "MESH_SECRET_KEY"
    raw = environ.get(name, "")
    if not raw:
        raise ValueError("MESH_SECRET_KEY must be set (32 random bytes, base64)")
    # A derived key, never the sealing key itself: one key, one use.
    return hmac.new(_decode_key(raw, name), _FINGERPRINT_LABEL, hashlib.sha256).digest()


def _decode_key(raw: str, name: str) -> bytes:
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError as e:
        raise ValueError(f"{name} is not base64") from e
    if len(key) != 32:
        raise ValueError(f"{name} must decode to 32 bytes, not {len(key)}")
    return key


def header_binding(tenant_id: str, service_call_id: str, header_name: str) -> bytes:
    return f"{tenant_id}\x00{service_call_id}\x00{header_name.lower()}".encode()
