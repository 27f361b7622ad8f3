"""A Standard Webhooks verifier written from the spec (standard-webhooks.md, "Verifying
webhooks"), independent of the executor's signing code: the tests check our signatures with it
and with the `standardwebhooks` reference library."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping


class VerificationError(Exception):
    pass


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance_s: int = 300,
) -> None:
    """Raises VerificationError unless one `v1` signature in webhook-signature matches."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as e:
        raise VerificationError(f"missing header {e}") from None
    # The timestamp is integer seconds since the epoch; outside the window it is a replay.
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        raise VerificationError("timestamp outside the tolerance")
    # The secret is base64 after the "whsec_" prefix; the key is the decoded bytes.
    key = base64.b64decode(secret.split("_", 1)[1] if secret.startswith("whsec_") else secret)
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = hmac.new(key, content, hashlib.sha256).digest()
    # Space-delimited list of "<version>,<base64 signature>"; unknown versions are skipped.
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(value, validate=True)
        except ValueError:
            continue
        if hmac.compare_digest(candidate, expected):
            return
    raise VerificationError("no matching signature")
