"""Secret request headers are sealed before they are stored, so the database, the outbox and
Kafka only ever hold ciphertext; only the executor opens them, right before sending.

A sealed header keeps its name and carries `SEALED_PREFIX + base64(sealed bytes)` as its value
in the domain's HttpRequest: the core never looks at header values, the API redacts secret
headers anyway, and the outbox mapping moves them into ExecutionRequested.sealed_headers.

Which headers are sealed is decided by the name alone (`is_secret_header`), at submit and again
at hand-off. The prefix is never trusted on its own: a client may send `X-Note: sealed:abc`,
and that value is the client's text, to be sent as it came.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace

from mesh.redaction import is_secret_header
from mesh.secrets import SEALED_MIN_BYTES, SecretBox, header_binding
from orchestrator.domain.model import HttpRequest

SEALED_PREFIX = "sealed:"


def seal_secret_headers(
    request: HttpRequest, tenant_id: str, service_call_id: str, box: SecretBox
) -> HttpRequest:
    headers = tuple(
        (
            name,
            SEALED_PREFIX
            + base64.b64encode(
                box.seal(value.encode(), header_binding(tenant_id, service_call_id, name))
            ).decode(),
        )
        if is_secret_header(name)
        else (name, value)
        for name, value in request.headers
    )
    return replace(request, headers=headers)


def split_sealed(
    headers: tuple[tuple[str, str], ...],
) -> tuple[tuple[tuple[str, str], ...], dict[str, bytes]]:
    """(clear headers, sealed headers by name) for the execution request.

    Never raises: this runs while the orchestrator applies a fact, where an exception would
    hold up the consumer's partition for every tenant.
    """
    clear: list[tuple[str, str]] = []
    sealed: dict[str, bytes] = {}
    for name, value in headers:
        opened = _sealed_bytes(value) if is_secret_header(name) else None
        if opened is None:
            clear.append((name, value))
        else:
            sealed[name] = opened
    return tuple(clear), sealed


def _sealed_bytes(value: str) -> bytes | None:
    # A secret-named header that was not sealed at submit (its name became secret after the
    # call was stored) holds the client's clear value: it is sent as it was before.
    if not value.startswith(SEALED_PREFIX):
        return None
    try:
        raw = base64.b64decode(value[len(SEALED_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) >= SEALED_MIN_BYTES else None
