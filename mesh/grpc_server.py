"""Runs a grpc.aio server with health, reflection, tracing and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from mesh.errors import UNAVAILABLE_MESSAGE, is_transient
from mesh.logs import get_logger

log = get_logger(__name__)

Registrar = Callable[[grpc.aio.Server], None]


@dataclass(frozen=True, slots=True)
class _Undecodable:
    reason: str


class RejectUndecodableRequests(grpc.aio.ServerInterceptor):
    """grpc.aio answers UNKNOWN when a request's bytes do not parse (the deserializer's
    exception escapes); a malformed request is the client's error, so say INVALID_ARGUMENT.

    Likewise an outage of Postgres or Kafka under a handler (mesh.errors.is_transient) is
    answered UNAVAILABLE, which clients and Envoy (HTTP 503) know to retry, not UNKNOWN (500).
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        deserialize = handler.request_deserializer
        behavior = handler.unary_unary

        def tolerant(data: bytes) -> Any:
            try:
                return deserialize(data)
            except Exception as e:  # DecodeError, or invalid UTF-8 in a string field
                return _Undecodable(type(e).__name__)

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Undecodable):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid protobuf message ({request.reason})",
                )
            try:
                # The stubs type handlers for sync servers; under grpc.aio they are coroutines.
                return await behavior(request, context)  # type: ignore[arg-type]
            except Exception as e:
                if not is_transient(e):
                    raise
                log.warning("request failed: a dependency is unavailable", error=repr(e))
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    UNAVAILABLE_MESSAGE,
                )

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=tolerant,
            response_serializer=handler.response_serializer,
        )


class GrpcServer:
    """One server per service; `service_names` are the full names registered by `registrars`.

    Health says SERVING only while the server is started and every component that reported
    readiness (`set_ready`, e.g. a Kafka consumer being rebuilt after a fatal error) is ready:
    a process whose consumer is dead must not look alive to its probes.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registrars: Sequence[Registrar],
        service_names: Sequence[str],
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        # `interceptors` come first, outermost (mesh.metrics.GrpcMetrics: it must see the
        # status code the client gets, after RejectUndecodableRequests chose it).
        # so_reuseport=0: a port clash must fail loudly instead of silently sharing the port.
        self.server = grpc.aio.server(
            interceptors=[
                *interceptors,
                RejectUndecodableRequests(),
                aio_server_interceptor(),  # type: ignore[no-untyped-call]
            ],
            options=[("grpc.so_reuseport", 0)],
        )
        for register in registrars:
            register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self._service_names = service_names
        self._serving = False
        self._not_ready: set[str] = set()
        # Health updates are async; one lock keeps them in the order the changes were made.
        self._publishing = asyncio.Lock()
        self._updates: set[asyncio.Task[None]] = set()
        self.address = f"{host}:{port}"
        self.bound_port = self.server.add_insecure_port(self.address)

    async def start(self) -> None:
        await self.server.start()
        await self.set_serving(True)
        log.info("grpc server listening", address=self.address)

    async def set_serving(self, serving: bool) -> None:
        self._serving = serving
        await self._publish()

    def set_ready(self, component: str, ready: bool) -> None:
        """Marks `component` ready or not; health is NOT_SERVING while any is not. Callable
        from synchronous code on the event loop (a consumer's state change)."""
        was_ready = component not in self._not_ready
        if ready:
            self._not_ready.discard(component)
        else:
            self._not_ready.add(component)
        if was_ready != ready:
            log.warning("readiness changed", component=component, ready=ready)
            task = asyncio.get_running_loop().create_task(self._publish())
            self._updates.add(task)
            task.add_done_callback(self._updates.discard)

    @property
    def ready(self) -> bool:
        return self._serving and not self._not_ready

    async def _publish(self) -> None:
        async with self._publishing:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if self.ready
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for name in ("", *self._service_names):
                await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)
