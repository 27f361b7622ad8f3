"""The attempts this process holds, for de-duplication and for ListExecutions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from executor.domain.execution import ExecutionOrder


class Stage(Enum):
    WAITING = "waiting"
    IN_FLIGHT = "in_flight"


AttemptKey = tuple[str, str, int]  # tenant_id, service_call_id, attempt


@dataclass(frozen=True, slots=True)
class ExecutionView:
    tenant_id: str
    service_call_id: str
    attempt: int
    stage: Stage
    not_before: datetime
    start_time: datetime | None


@dataclass(eq=False, slots=True)
class HeldExecution:
    """Mutable on purpose: one entry per attempt, changed only by the task that holds it."""

    order: ExecutionOrder
    stage: Stage = Stage.WAITING
    start_time: datetime | None = None
    # True once the attempt's result was acknowledged; False if it was abandoned.
    finished: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def key(self) -> AttemptKey:
        call = self.order.call
        return (call.tenant_id, call.service_call_id, self.order.attempt)

    def view(self) -> ExecutionView:
        call = self.order.call
        return ExecutionView(
            tenant_id=call.tenant_id,
            service_call_id=call.service_call_id,
            attempt=self.order.attempt,
            stage=self.stage,
            not_before=self.order.not_before,
            start_time=self.start_time,
        )


class Executions:
    def __init__(self) -> None:
        self._held: dict[AttemptKey, HeldExecution] = {}

    def hold(self, order: ExecutionOrder) -> tuple[HeldExecution, bool]:
        """The entry for this attempt, and whether the caller created it (and so performs it)."""
        call = order.call
        key = (call.tenant_id, call.service_call_id, order.attempt)
        existing = self._held.get(key)
        if existing is not None:
            return existing, False
        entry = HeldExecution(order)
        self._held[key] = entry
        return entry, True

    def release(self, entry: HeldExecution, completed: bool) -> None:
        if self._held.get(entry.key) is entry:
            del self._held[entry.key]
        if not entry.finished.done():
            entry.finished.set_result(completed)

    def views(self) -> list[ExecutionView]:
        return [entry.view() for entry in self._held.values()]

    def __len__(self) -> int:
        return len(self._held)
