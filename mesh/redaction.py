"""Redaction policy: which headers are secret, and masking of sensitive fields in snippets."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[REDACTED]"

# Names compared case-insensitively. Anything that authenticates a caller is secret.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-amz-security-token",
        "x-csrf-token",
    }
)
_SECRET_NAME = re.compile(r"(secret|token|password|passwd|api[-_]?key|credential|signature)", re.I)


def is_secret_header(name: str, extra: Iterable[str] = ()) -> bool:
    lowered = name.lower()
    return (
        lowered in SECRET_HEADERS
        or lowered in {e.lower() for e in extra}
        or bool(_SECRET_NAME.search(lowered))
    )


def redact_headers(
    headers: tuple[tuple[str, str], ...], extra: Iterable[str] = ()
) -> tuple[tuple[str, str], ...]:
    extra = tuple(extra)
    return tuple(
        (name, REDACTED if is_secret_header(name, extra) else value) for name, value in headers
    )


# "password": "x"  |  password=x  |  "access_token":"x"  — JSON, form and query styles.
_SENSITIVE_FIELD = re.compile(
    r"""(?P<key>["']?[\w.-]*(?:secret|token|password|passwd|api[-_]?key|credential|ssn|card[-_]?number)[\w.-]*["']?\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,&}\]]+)""",
    re.I,
)


def snippet(body: bytes, limit: int) -> str:
    """The first `limit` bytes of a response body as text, with sensitive fields masked."""
    text = body[:limit].decode("utf-8", errors="replace")
    return _SENSITIVE_FIELD.sub(lambda m: f"{m.group('key')}{_mask(m.group('value'))}", text)


def _mask(value: str) -> str:
    if value[:1] in ('"', "'"):
        return f"{value[0]}{REDACTED}{value[0]}"
    return REDACTED
