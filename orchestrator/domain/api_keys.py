"""API keys: their text form and how a key's secret is checked. Standard library only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

PREFIX = "sck_"
_FORM = re.compile(r"sck_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    secret: str

    @property
    def text(self) -> str:
        return f"{PREFIX}{self.key_id}_{self.secret}"


def new_api_key(key_id_bytes: bytes, secret_bytes: bytes) -> ApiKey:
    """A key from 8 + 32 random bytes (passed in: the core draws no randomness itself)."""
    if len(key_id_bytes) != 8 or len(secret_bytes) != 32:
        raise ValueError("an API key needs 8 id bytes and 32 secret bytes")
    secret = base64.urlsafe_b64encode(secret_bytes).decode().rstrip("=")
    return ApiKey(key_id_bytes.hex(), secret)


def parse_api_key(text: str) -> ApiKey | None:
    match = _FORM.fullmatch(text.strip())
    return None if match is None else ApiKey(match.group(1), match.group(2))


def hash_secret(secret: str) -> bytes:
    # 256 random bits cannot be guessed from a dictionary, so a slow password hash buys
    # nothing here; SHA-256 keeps every authenticated request cheap.
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
