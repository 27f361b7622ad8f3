"""The scheduler's internal TimerService (operators and tests; not routed by Envoy)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, NoReturn

import grpc

from mesh import tracing
from mesh.ports import Clock, IdGen
from scheduler import mapping
from scheduler.ports import TimerStore
from scheduler.service_layer import timers
from scheduler.service_layer.firing import Firer
from servicecall.internal.v1 import timer_service_pb2 as ts
from servicecall.internal.v1 import timer_service_pb2_grpc as ts_grpc

MAX_PAGE = 1000

if TYPE_CHECKING:
    from typing import TypeAlias

    Context: TypeAlias = grpc.aio.ServicerContext[object, object]


class TimerApi(ts_grpc.TimerServiceServicer):
    def __init__(self, store: TimerStore, firer: Firer, clock: Clock, ids: IdGen) -> None:
        self._store = store
        self._firer = firer
        self._clock = clock
        self._ids = ids

    async def ScheduleTimer(  # noqa: N802 - gRPC method name
        self, request: ts.ScheduleTimerRequest, context: Context
    ) -> ts.Timer:
        if (
            not request.tenant_id
            or not request.service_call_id
            or not request.HasField("fire_time")
        ):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "tenant_id, service_call_id and fire_time are required",
            )
        timer = mapping.scheduled_timer(
            request,
            armed_by=f"api/{self._ids.new_id()}",
            correlation_id=request.correlation_id or self._ids.new_id(),
            trace_context=tracing.current_carrier(),
        )
        return mapping.timer_to_proto(await timers.schedule(self._store, self._firer, timer))

    async def CancelTimer(  # noqa: N802
        self, request: ts.CancelTimerRequest, context: Context
    ) -> ts.Timer:
        await _check_timer_id(request.timer_id, context)
        try:
            canceled = await timers.cancel(self._store, request.timer_id, self._clock.now())
        except timers.TimerNotFoundError:
            await _not_found(request.timer_id, context)
        except timers.TimerNotPendingError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        return mapping.timer_to_proto(canceled)

    async def GetTimer(  # noqa: N802
        self, request: ts.GetTimerRequest, context: Context
    ) -> ts.Timer:
        await _check_timer_id(request.timer_id, context)
        try:
            timer = await timers.get(self._store, request.timer_id)
        except timers.TimerNotFoundError:
            await _not_found(request.timer_id, context)
        return mapping.timer_to_proto(timer)

    async def ListTimers(  # noqa: N802
        self, request: ts.ListTimersRequest, context: Context
    ) -> ts.ListTimersResponse:
        if not 0 <= request.page_size <= MAX_PAGE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"page_size must be 0..{MAX_PAGE}"
            )
        after = None
        if request.page_token:
            try:
                after = mapping.page_after(request.page_token)
            except ValueError:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad page_token")
        page, more = await timers.list_pending(self._store, request.page_size or 100, after)
        return ts.ListTimersResponse(
            timers=[mapping.timer_to_proto(t) for t in page],
            next_page_token=mapping.page_token(page[-1]) if more else "",
        )


async def _check_timer_id(timer_id: str, context: Context) -> None:
    try:
        uuid.UUID(timer_id)
    except ValueError:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "timer_id must be a UUID")


async def _not_found(timer_id: str, context: Context) -> NoReturn:
    await context.abort(grpc.StatusCode.NOT_FOUND, f"timer {timer_id} not found")
