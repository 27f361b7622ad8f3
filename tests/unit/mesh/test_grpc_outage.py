"""An outage under a handler answers UNAVAILABLE (retryable), any other failure UNKNOWN."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import pytest

from mesh.grpc_server import GrpcServer

METHOD = "/test.Outage/Call"


def _registrar(error: Exception) -> Any:
    async def call(_request: bytes, _context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        raise error

    def register(server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=bytes, response_serializer=bytes
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Outage", {"Call": handler}),)
        )

    return register


@pytest.fixture
async def call_raising() -> AsyncIterator[Any]:
    servers: list[GrpcServer] = []

    async def call(error: Exception) -> grpc.StatusCode:
        server = GrpcServer("127.0.0.1", 0, [_registrar(error)], [])
        servers.append(server)
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await rpc(b"x")
        return raised.value.code()

    yield call
    for server in servers:
        await server.stop(0)


async def test_a_lost_database_connection_answers_unavailable(call_raising: Any) -> None:
    error = psycopg.OperationalError("connection refused")
    assert await call_raising(error) == grpc.StatusCode.UNAVAILABLE


async def test_an_outage_wrapped_by_another_error_answers_unavailable(call_raising: Any) -> None:
    try:
        try:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        except psycopg.OperationalError as cause:
            raise RuntimeError("store failed") from cause
    except RuntimeError as wrapped:
        assert await call_raising(wrapped) == grpc.StatusCode.UNAVAILABLE


async def test_a_bug_still_answers_unknown(call_raising: Any) -> None:
    assert await call_raising(ValueError("a bug")) == grpc.StatusCode.UNKNOWN
