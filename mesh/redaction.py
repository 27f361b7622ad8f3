"""Redaction policy: which headers are secret, masking of sensitive fields in snippets, and
URLs made safe to record."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

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


# Names (of JSON/form fields, headers echoed in a body, XML elements) whose values are masked.
_SENSITIVE_NAME = (
    r"(?:secret|token|password|passwd|api[-_]?key|private[-_]?key|credential|authorization"
    r"|cookie|ssn|card[-_]?number)"
)
# "password": "x"  |  password=x  |  "access_token":"x"  |  Authorization: Bearer x  — JSON,
# form, query and header styles. A quoted value cut by the end of the text is masked to the
# end; an unquoted one may be an auth scheme and its credentials (two words).
_SENSITIVE_FIELD = re.compile(
    # A key is a whole run of name characters containing a sensitive word. It starts only where
    # a run starts and is taken whole (possessive `*+`): trying every start and every split of
    # a long run made this quadratic, seconds of CPU for a few KiB of letters.
    rf"""(?P<key>["']?(?<![\w.-])(?=[\w.-]*{_SENSITIVE_NAME})[\w.-]*+["']?\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*(?:"|\\?\Z)|'(?:[^'\\]|\\.)*(?:'|\\?\Z)"""
    r"""|(?:(?:bearer|basic|digest|token|negotiate)[ \t]+)?[^\s,&}\]]+)""",
    re.I,
)
# <password>x</password>, <ns:api_key id="1">x</ns:api_key>, CDATA included: the element's
# text up to the next tag (or the end of the text) is masked.
_SENSITIVE_ELEMENT = re.compile(
    rf"""(?P<open><(?=[\w.:-]*{_SENSITIVE_NAME})[\w.:-]*+(?:\s[^<>]*)?(?<!/)>)"""
    r"""(?P<value>(?:<!\[CDATA\[(?:[^\]]|\](?!\]>))*(?:\]\]>|\Z)|[^<])+)""",
    re.I,
)
# A bearer credential anywhere else (a log line echoed back, a curl command in an error page).
_BEARER = re.compile(r"(?P<scheme>\bbearer[ \t]+)(?P<value>[\w~+/.=-]+)", re.I)

# Masking reads this far past the snippet's end, so a secret that straddles the cut is still
# recognised (its key and opening quote are inside) and masked before the text is cut.
LOOKAHEAD_BYTES = 4096


def snippet(body: bytes, limit: int) -> str:
    """The first `limit` bytes of a response body as text, with sensitive fields masked.

    Masks first, then cuts: cutting first would turn `"password": "hunter2"` into
    `"password": "hun`, which no longer looks like a field and would leak its head.
    """
    text = body[: limit + LOOKAHEAD_BYTES].decode("utf-8", errors="replace")
    text = _SENSITIVE_FIELD.sub(lambda m: f"{m.group('key')}{_mask(m.group('value'))}", text)
    text = _SENSITIVE_ELEMENT.sub(lambda m: f"{m.group('open')}{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group('scheme')}{REDACTED}", text)
    # Cut on a character boundary: a half character at the end is dropped, not replaced.
    return text.encode()[:limit].decode("utf-8", errors="ignore")


def _mask(value: str) -> str:
    if value[:1] in ('"', "'"):
        return f"{value[0]}{REDACTED}{value[0]}"
    return REDACTED


def redact_url(url: str) -> str:
    """`url` safe to record (a trace attribute): no user info, no fragment, and every query
    value replaced, since tokens and signatures travel there (`?sig=`, `?access_token=`);
    the parameter names stay."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    # A bare item (`?abc123`) may itself be the secret: only named values keep their name.
    query = "&".join(
        f"{name}={REDACTED}" if sep else REDACTED
        for name, sep, _value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
