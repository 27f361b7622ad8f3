"""What every public gRPC servicer of the orchestrator does alike (ServiceCallService in
grpc_api.py, ScheduleService in schedules_api.py): who is calling, and how a refusal is sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import grpc
from grpc_status import rpc_status

from mesh.ports import IdGen
from orchestrator.domain.validation import FieldViolation
from orchestrator.mapping import invalid_status
from orchestrator.service_layer.auth import Authenticator

Context = grpc.aio.ServicerContext[object, object]

# google.rpc.Code numbers (what mapping.py gives) are gRPC's status codes.
GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def key_from_metadata(metadata: dict[str, str]) -> str | None:
    """`Authorization: Bearer <key>` (what curl and grpcurl users send) or `x-api-key`."""
    authorization = metadata.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return metadata.get("x-api-key") or None


def metadata_of(context: Context) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else value.decode()
        for key, value in context.invocation_metadata() or ()
    }


def correlation_id(context: Context, ids: IdGen) -> str:
    return metadata_of(context).get("x-request-id") or ids.new_id()


async def authorize(auth: Authenticator, context: Context, tenant_id: str, not_found: str) -> None:
    """Every RPC runs as the tenant its API key belongs to. Another tenant's resources answer
    exactly like missing ones (`not_found`), so nothing tells them apart."""
    caller = await auth.tenant_for(key_from_metadata(metadata_of(context)))
    if caller is None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "a valid API key is required: 'Authorization: Bearer sck_...'",
        )
    if caller != tenant_id:
        await context.abort(grpc.StatusCode.NOT_FOUND, not_found)


async def abort_invalid(context: Context, violations: Sequence[FieldViolation]) -> NoReturn:
    await context.abort_with_status(rpc_status.to_status(invalid_status(violations)))
    raise AssertionError("unreachable")


async def abort_code(context: Context, code: int, message: str) -> NoReturn:
    """Ends the RPC with `code` (a google.rpc.Code number, as mapping.py gives)."""
    await context.abort(GRPC_CODES[code], message)
    raise AssertionError("unreachable")
