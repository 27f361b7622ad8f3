"""Health follows readiness: NOT_SERVING while a component (a dead Kafka consumer) is not
ready, SERVING again once it is (issue #12 defect 0: health said SERVING with a dead consumer)."""

from __future__ import annotations

import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.grpc_server import GrpcServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def status_becomes(health: Any, service: str, wanted: int, within: float = 5.0) -> bool:
    """Asks until the status is `wanted` (set_ready publishes it from a task of its own)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        if answer.status == wanted:
            return True
    return False


async def test_health_is_not_serving_while_a_component_is_not_ready() -> None:
    server = GrpcServer("127.0.0.1", 0, [], ["test.Service"])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            # the typeshed stub for HealthStub declares no methods
            health: Any = health_pb2_grpc.HealthStub(channel)
            assert await status_becomes(health, "test.Service", SERVING)
            server.set_ready("consumer", False)
            assert not server.ready
            assert await status_becomes(health, "test.Service", NOT_SERVING)
            assert await status_becomes(health, "", NOT_SERVING)
            server.set_ready("consumer", True)
            assert server.ready
            assert await status_becomes(health, "test.Service", SERVING)
            # A stop wins: a component becoming ready afterwards does not undo it.
            server.set_ready("consumer", False)
            await server.set_serving(False)
            server.set_ready("consumer", True)
            assert not server.ready
            assert not await status_becomes(health, "", SERVING, within=0.3)
    finally:
        await server.stop(grace=0.1)
