"""Secret request headers are sealed before they are stored, so the database, the outbox and
Kafka only ever hold ciphertext; only the executor opens them, right before sending.

A sealed header keeps its name and carries `SEALED_PREFIX + base64(sealed bytes)` as its value
in the domain's HttpRequest: the core never looks at header values, the API redacts secret
headers anyway, and the outbox mapping moves them into ExecutionRequested.sealed_headers.
"""

from __future__ import annotations

import base64
from dataclasses import replace

from mesh.redaction import is_secret_header
from mesh.secrets import SecretBox, header_binding
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
    """(clear headers, sealed headers by name) for the execution request."""
    clear: list[tuple[str, str]] = []
    sealed: dict[str, bytes] = {}
    for name, value in headers:
        if value.startswith(SEALED_PREFIX):
            sealed[name] = base64.b64decode(value[len(SEALED_PREFIX) :])
        else:
            clear.append((name, value))
    return tuple(clear), sealed
