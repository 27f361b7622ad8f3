"""Standard Webhooks signatures (HMAC-SHA256 over "id.timestamp.body") with key rotation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
SIGNATURE_HEADERS = frozenset({WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE})

SECRET_PREFIX = "whsec_"
# The spec asks for 24 to 64 random bytes.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


@dataclass(frozen=True, slots=True)
class SigningSecret:
    """One tenant signing key; its repr never shows the key, so it cannot leak into a log."""

    key: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> SigningSecret:
        """`whsec_` + base64 of 24–64 bytes; ValueError otherwise (the message never quotes
        the text, which is a secret)."""
        raw = text.strip()
        raw = raw.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError("signing secret is not base64 after the whsec_ prefix") from e
        if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
            bounds = f"{MIN_SECRET_BYTES}-{MAX_SECRET_BYTES}"
            raise ValueError(f"signing secret must be {bounds} bytes, not {len(key)}")
        return cls(key)


def signed_content(message_id: str, timestamp: int, body: bytes) -> bytes:
    # The body goes in as the bytes sent, not re-encoded text.
    return f"{message_id}.{timestamp}.".encode() + body


def sign(secret: SigningSecret, message_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.key, signed_content(message_id, timestamp, body), hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode()


def signature_headers(
    secrets: Sequence[SigningSecret], message_id: str, at: datetime, body: bytes
) -> tuple[tuple[str, str], ...]:
    """The three headers, signed with every secret (space-separated): during a rotation the
    receiver may hold either the old or the new secret, and one match verifies. No secrets,
    no headers: signing is opt-in per tenant."""
    if not secrets:
        return ()
    timestamp = math.floor(at.timestamp())
    signatures = " ".join(sign(s, message_id, timestamp, body) for s in secrets)
    return (
        (WEBHOOK_ID, message_id),
        (WEBHOOK_TIMESTAMP, str(timestamp)),
        (WEBHOOK_SIGNATURE, signatures),
    )


def parse_signing_keys(document: object) -> dict[str, tuple[SigningSecret, ...]]:
    """Tenant → secrets from a decoded JSON document `{"<tenant>": ["whsec_...", ...]}`.

    Newest first by convention; all of them sign. ValueError names the tenant, never a secret.
    """
    if not isinstance(document, Mapping):
        raise ValueError("signing keys must be a JSON object of tenant -> list of secrets")
    keys: dict[str, tuple[SigningSecret, ...]] = {}
    for tenant, listed in document.items():
        if not isinstance(tenant, str) or not tenant:
            raise ValueError("tenant ids must be non-empty strings")
        secrets = [listed] if isinstance(listed, str) else listed
        if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
            raise ValueError(f"tenant {tenant!r}: secrets must be a list of strings")
        if len(secrets) > 2:
            # Rotation needs two at once; more would only grow every request's header.
            raise ValueError(f"tenant {tenant!r}: at most two secrets (new and old)")
        try:
            keys[tenant] = tuple(SigningSecret.parse(s) for s in secrets)
        except ValueError as e:
            raise ValueError(f"tenant {tenant!r}: {e}") from None
    return keys
