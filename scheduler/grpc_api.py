"""The scheduler's internal TimerService (operators and tests; not routed by Envoy)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import grpc

from mesh import tracing
from mesh.ports import Clock, IdGen
from mesh.timeconv import from_timestamp, to_timestamp
from scheduler.domain.timers import Timer, TimerKey, TimerState
from scheduler.firing import Firer
from scheduler.ports import TimerStore
from servicecall.internal.v1 import timer_service_pb2 as ts
from servicecall.internal.v1 import timer_service_pb2_grpc as ts_grpc

_STATE = {
    TimerState.PENDING: ts.Timer.PENDING,
    TimerState.FIRED: ts.Timer.FIRED,
    TimerState.CANCELED: ts.Timer.CANCELED,
}
MAX_PAGE = 1000


def timer_to_proto(timer: Timer) -> ts.Timer:
    key = timer.key
    return ts.Timer(
        timer_id=timer.timer_id,
        tenant_id=key.tenant_id,
        service_call_id=key.service_call_id,
        purpose=key.purpose,  # type: ignore[arg-type]
        attempt=key.attempt,
        fire_time=to_timestamp(key.fire_at),
        state=_STATE[timer.state],
        correlation_id=timer.correlation_id,
        sequence=timer.sequence,
    )


def _token(timer: Timer) -> str:
    return base64.urlsafe_b64encode(
        f"{timer.key.fire_at.isoformat()}|{timer.timer_id}".encode()
    ).decode()


def _after(token: str) -> tuple[datetime, str]:
    fire_at, timer_id = base64.urlsafe_b64decode(token.encode()).decode().split("|")
    uuid.UUID(timer_id)
    return datetime.fromisoformat(fire_at), timer_id


class TimerApi(ts_grpc.TimerServiceServicer):
    def __init__(self, store: TimerStore, firer: Firer, clock: Clock, ids: IdGen) -> None:
        self._store = store
        self._firer = firer
        self._clock = clock
        self._ids = ids

    async def ScheduleTimer(  # noqa: N802 - gRPC method name
        self, request: ts.ScheduleTimerRequest, context: grpc.aio.ServicerContext[object, object]
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
        timer = Timer(
            key=TimerKey(
                tenant_id=request.tenant_id,
                service_call_id=request.service_call_id,
                purpose=request.purpose,
                attempt=request.attempt,
                fire_at=from_timestamp(request.fire_time),
            ),
            armed_by=f"api/{self._ids.new_id()}",
            correlation_id=request.correlation_id or self._ids.new_id(),
            sequence=0,
            trace_context=tracing.current_carrier(),
        )
        if await self._store.arm(timer):
            self._firer.armed(timer.key.fire_at)
        stored = await self._store.get(timer.timer_id)
        assert stored is not None
        return timer_to_proto(stored)

    async def CancelTimer(  # noqa: N802
        self, request: ts.CancelTimerRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ts.Timer:
        timer = await self._existing(request.timer_id, context)
        if timer.state is not TimerState.PENDING:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"timer is {timer.state.value}"
            )
        canceled = await self._store.cancel(request.timer_id, self._clock.now())
        if canceled is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "timer fired meanwhile")
        return timer_to_proto(canceled)

    async def GetTimer(  # noqa: N802
        self, request: ts.GetTimerRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ts.Timer:
        return timer_to_proto(await self._existing(request.timer_id, context))

    async def ListTimers(  # noqa: N802
        self, request: ts.ListTimersRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> ts.ListTimersResponse:
        if not 0 <= request.page_size <= MAX_PAGE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"page_size must be 0..{MAX_PAGE}"
            )
        size = request.page_size or 100
        after = None
        if request.page_token:
            try:
                after = _after(request.page_token)
            except ValueError:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad page_token")
        timers = await self._store.list_pending(size + 1, after)
        page = list(timers[:size])
        return ts.ListTimersResponse(
            timers=[timer_to_proto(t) for t in page],
            next_page_token=_token(page[-1]) if len(timers) > size else "",
        )

    async def _existing(
        self, timer_id: str, context: grpc.aio.ServicerContext[object, object]
    ) -> Timer:
        try:
            uuid.UUID(timer_id)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "timer_id must be a UUID")
        timer = await self._store.get(timer_id)
        if timer is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"timer {timer_id} not found")
        return timer
