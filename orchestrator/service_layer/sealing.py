"""Secret request headers are sealed at submit, before they are stored, so the database, the
outbox and Kafka only ever hold ciphertext; only the executor opens them, right before sending.

A sealed header keeps its name and carries `SEALED_PREFIX + base64(sealed bytes)` as its value
in the domain's HttpRequest: the core never looks at header values, the API redacts secret
headers anyway, and the outbox mapping (orchestrator/mapping.py, `split_sealed`) moves them into
ExecutionRequested.sealed_headers.

Which headers are sealed is decided by the name alone (`is_secret_header`), at submit and again
at hand-off. The prefix is never trusted on its own: a client may send `X-Note: sealed:abc`,
and that value is the client's text, to be sent as it came.
"""

from __future__ import annotations

import base64
from dataclasses import replace

from mesh.redaction import is_secret_header
from mesh.secrets import SecretBox, SecretError, header_binding, sealed_bytes
from orchestrator.domain.model import SEALED_PREFIX, HttpRequest


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


def open_secret_headers(
    request: HttpRequest, tenant_id: str, service_call_id: str, box: SecretBox
) -> HttpRequest | None:
    """The request as the client sent it, from its stored form: what a replay submits again
    (and then seals anew, bound to the new call, since a sealed value opens only on the call
    it was sealed for). None when a sealed header no longer opens (its key was retired).

    A secret-named header whose value does not open as sealed is the client's own text (see
    the module's docstring), and is kept as it is, as the hand-off would send it."""
    headers: list[tuple[str, str]] = []
    for name, value in request.headers:
        raw = sealed_bytes(value, SEALED_PREFIX) if is_secret_header(name) else None
        if raw is not None:
            try:
                opened = box.open(raw, header_binding(tenant_id, service_call_id, name))
            except SecretError:
                return None
            headers.append((name, opened.decode()))
        else:
            headers.append((name, value))
    return replace(request, headers=tuple(headers))
