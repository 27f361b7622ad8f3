"""The attempts this process holds, for de-duplication and for ListExecutions, and the results
of those it finished lately, so that a redelivered request is answered without a second send."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from executor.domain.execution import ExecutionOrder
from mesh.ports import OutgoingMessage

# Defaults for the memory of finished attempts (FINISHED_ATTEMPTS_REMEMBERED/_BYTES).
FINISHED_REMEMBERED = 100_000
FINISHED_BYTES = 64 * 1024 * 1024
# What one remembered result costs besides its envelope's bytes (the ordered dict's slot and
# link, the key tuple, the bytes object's header).
_ENTRY_OVERHEAD = 200


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


def attempt_key(order: ExecutionOrder) -> AttemptKey:
    call = order.call
    return (call.tenant_id, call.service_call_id, order.attempt)


class FinishedAttempts:
    """The acknowledged result of each attempt finished lately, oldest forgotten first.

    Bounded by a count and by bytes (a result carries the response snippet): 100k results of
    the default 1 KiB snippet are about 130 MB, so the byte bound is the one that usually
    applies. A redelivery later than this memory reaches is sent again, as before; so is one
    delivered to another executor (after a rebalance or a restart), which never saw the first.

    Only the envelope's bytes are kept, under a tuple of strings and an int: none of these is
    an object the garbage collector tracks (such tuples are untracked at their first
    collection), so a full memory adds nothing to the executor's collections, which pause it.
    """

    def __init__(self, max_entries: int = FINISHED_REMEMBERED, max_bytes: int = FINISHED_BYTES):
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._results: OrderedDict[AttemptKey, bytes] = OrderedDict()
        self.bytes = 0

    def remember(self, key: AttemptKey, envelope: bytes) -> None:
        """`envelope`: the result message's value, as acknowledged."""
        old = self._results.pop(key, None)
        if old is not None:
            self.bytes -= len(old) + _ENTRY_OVERHEAD
        self._results[key] = envelope
        self.bytes += len(envelope) + _ENTRY_OVERHEAD
        while self._results and (
            len(self._results) > self._max_entries or self.bytes > self._max_bytes
        ):
            _, dropped = self._results.popitem(last=False)
            self.bytes -= len(dropped) + _ENTRY_OVERHEAD

    def result_of(self, key: AttemptKey) -> bytes | None:
        return self._results.get(key)

    def __len__(self) -> int:
        return len(self._results)


class Executions:
    def __init__(
        self,
        finished_remembered: int = FINISHED_REMEMBERED,
        finished_bytes: int = FINISHED_BYTES,
    ) -> None:
        self._held: dict[AttemptKey, HeldExecution] = {}
        self.finished = FinishedAttempts(finished_remembered, finished_bytes)

    def result_of(self, order: ExecutionOrder) -> bytes | None:
        """The acknowledged result (the envelope's bytes) of this attempt if it finished here
        lately, else None."""
        return self.finished.result_of(attempt_key(order))

    def hold(self, order: ExecutionOrder) -> tuple[HeldExecution, bool]:
        """The entry for this attempt, and whether the caller created it (and so performs it)."""
        key = attempt_key(order)
        existing = self._held.get(key)
        if existing is not None:
            return existing, False
        entry = HeldExecution(order)
        self._held[key] = entry
        return entry, True

    def release(self, entry: HeldExecution, result: OutgoingMessage | None) -> None:
        """`result`: the attempt's acknowledged result; None if it was abandoned (cancelled),
        in which case a redelivery performs it again."""
        key = entry.key
        if result is not None:
            # Remembered before the entry goes, so that no redelivery sees neither.
            self.finished.remember(key, result.value)
        if self._held.get(key) is entry:
            del self._held[key]
        if not entry.finished.done():
            entry.finished.set_result(result is not None)

    def views(self) -> list[ExecutionView]:
        return [entry.view() for entry in self._held.values()]

    def __len__(self) -> int:
        return len(self._held)
