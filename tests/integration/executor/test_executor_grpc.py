"""ExecutorService, health and reflection served by the shared GrpcServer on a free port."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from executor.domain.execution import CallRef, ExecutionOrder, HttpRequest
from executor.entrypoints.grpc_api import SERVICE_NAME, ExecutorApi
from executor.service_layer.registry import Executions
from mesh.grpc_server import GrpcServer
from mesh.timeconv import from_timestamp
from servicecall.internal.v1 import executor_service_pb2 as pb
from servicecall.internal.v1 import executor_service_pb2_grpc as pb_grpc
from tests.fakes.executor.ports import T0

pytestmark = pytest.mark.integration


async def test_list_executions_and_health_over_grpc() -> None:
    executions = Executions()
    order = ExecutionOrder(
        call=CallRef("acme", "call-1", "corr-1", 1),
        attempt=1,
        not_before=T0,
        lease_expires_at=None,
        request=HttpRequest("GET", "http://127.0.0.1/", (), b"", timedelta(seconds=1)),
        idempotency_key="k",
        snippet_bytes=10,
    )
    entry, _ = executions.hold(order)
    server = GrpcServer(
        "127.0.0.1",
        0,
        [partial(pb_grpc.add_ExecutorServiceServicer_to_server, ExecutorApi(executions, "exec-x"))],
        [SERVICE_NAME],
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            listed = await pb_grpc.ExecutorServiceStub(channel).ListExecutions(
                pb.ListExecutionsRequest()
            )
            assert listed.executor_id == "exec-x"
            [execution] = listed.executions
            assert execution.state == pb.Execution.WAITING
            assert from_timestamp(execution.not_before) == T0
            # the typeshed stub for HealthStub declares no methods
            health_stub: Any = health_pb2_grpc.HealthStub(channel)
            health = await health_stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        executions.release(entry, result=None)
        await server.stop(grace=0.1)
