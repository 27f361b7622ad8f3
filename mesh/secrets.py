"""Sealing of secret values (secret request headers) at rest and on Kafka: AES-256-GCM.

One key for the mesh, from the environment (`MESH_SECRET_KEY`: 32 bytes, base64). A sealed
value is `version byte || 12-byte nonce || ciphertext+tag`; the associated data binds it to
where it belongs (tenant, call, header name), so a sealed value copied onto another call or
header does not open. Rotation: a new key gets a new version byte; `SecretBox` opens with any
key it knows and seals with the newest.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class SecretError(ValueError):
    """A sealed value could not be opened: wrong key, tampered, or bound elsewhere."""


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
    def from_env(cls, environ: Mapping[str, str]) -> SecretBox:
        """`MESH_SECRET_KEY` (current, version 1) and optionally `MESH_SECRET_KEY_OLD`
        (version 0, still opened) while re-sealing after a rotation."""
        raw = environ.get("MESH_SECRET_KEY", "")
        if not raw:
            raise ValueError("MESH_SECRET_KEY must be set (32 random bytes, base64)")
        keys = {1: _decode_key(raw, "MESH_SECRET_KEY")}
        if environ.get("MESH_SECRET_KEY_OLD"):
            keys[0] = _decode_key(environ["MESH_SECRET_KEY_OLD"], "MESH_SECRET_KEY_OLD")
        return cls(keys, current=1)

    def seal(self, plaintext: bytes, bound_to: bytes) -> bytes:
        nonce = os.urandom(12)
        sealed = self._keys[self._current].encrypt(nonce, plaintext, bound_to)
        return bytes([self._current]) + nonce + sealed

    def open(self, sealed: bytes, bound_to: bytes) -> bytes:
        if len(sealed) < 1 + 12 + 16 or sealed[0] not in self._keys:
            raise SecretError("not a sealed value of this mesh")
        try:
            return self._keys[sealed[0]].decrypt(sealed[1:13], sealed[13:], bound_to)
        except Exception as e:  # InvalidTag: the only failure AESGCM.decrypt has
            raise SecretError("sealed value does not open here") from e


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
