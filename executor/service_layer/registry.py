"""The attempts this process holds, for de-duplication and for ListExecutions, and the results
of those it finished lately, so that a redelivered request is answered without a second send."""

from __future__ import annotations

import asyncio
import mmap
import struct
from array import array
from dataclasses import dataclass, field
from datetime import datetime

from executor.domain.execution import ExecutionOrder, ExecutionView, Stage
from mesh.ports import OutgoingMessage

# Defaults for the memory of finished attempts (FINISHED_ATTEMPTS_REMEMBERED/_BYTES).
FINISHED_REMEMBERED = 100_000
FINISHED_BYTES = 64 * 1024 * 1024


AttemptKey = tuple[str, str, int]  # tenant_id, service_call_id, attempt


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

    Bounded by a count and by bytes (a result carries the response snippet). A redelivery later
    than this memory reaches is sent again, as before; so is one delivered to another executor
    (after a rebalance or a restart), which never saw the first.

    No Python object per entry, on purpose: results are remembered while a crowd of attempts
    is held, so objects per entry (a key tuple, its strings, the envelope's bytes) land in
    every arena of Python's small-object allocator that the crowd filled, and keep all of
    those arenas after the crowd is gone (measured: 130 arenas, 136 MB, held with 48 MB live
    after a 10k burst; docs/timing.md). So records (key, envelope) are written one after the
    other into one anonymous mapping used as a ring (its pages become resident only as they
    are written), and an open-addressing index of record numbers lives in an array; nothing
    the garbage collector tracks, nothing left in the arenas.
    """

    _HEADER = struct.Struct("<IH")  # the envelope's length, the key's length

    def __init__(self, max_entries: int = FINISHED_REMEMBERED, max_bytes: int = FINISHED_BYTES):
        # A bound of 0 (either) turns the memory off: nothing is remembered.
        self._off = max_entries < 1 or max_bytes < 1
        self._records = max(1, max_entries)
        self._capacity = max(1, max_bytes)
        self._ring = mmap.mmap(-1, self._capacity)
        # Per record number n, at n % records: where its record starts (a position that only
        # grows; the ring offset is position % capacity) and its key's hash.
        self._positions = array("q", [0]) * self._records
        self._hashes = array("q", [0]) * self._records
        # Linear probing over at least twice the records, so probe runs stay short; a slot
        # holds record number + 1, 0 when empty.
        size = 1 << max(4, (2 * self._records - 1).bit_length())
        self._slots = array("q", [0]) * size
        self._mask = size - 1
        self._oldest = 0  # the oldest record still in the ring
        self._next = 0  # the next record's number
        self._head = 0  # the position after the newest record
        self._count = 0  # records in the index (a replaced record stays in the ring, unindexed)

    def remember(self, key: AttemptKey, envelope: bytes) -> None:
        """`envelope`: the result message's value, as acknowledged."""
        key_bytes = _key_bytes(key)
        key_hash = hash(key_bytes)
        # A newer result replaces an older one (its record stays in the ring until overrun).
        slot = self._slot_of_key(key_bytes, key_hash)
        if slot is not None:
            self._remove_slot(slot)
        size = self._HEADER.size + len(key_bytes) + len(envelope)
        if self._off or size > self._capacity:
            return
        position = self._head
        offset = position % self._capacity
        if offset + size > self._capacity:  # records do not wrap: the next lap starts at 0
            position += self._capacity - offset
            offset = 0
        while self._oldest < self._next and (
            self._next - self._oldest >= self._records
            or self._positions[self._oldest % self._records] < position + size - self._capacity
        ):
            self._forget_oldest()
        self._HEADER.pack_into(self._ring, offset, len(envelope), len(key_bytes))
        start = offset + self._HEADER.size
        self._ring[start : start + len(key_bytes)] = key_bytes
        self._ring[start + len(key_bytes) : offset + size] = envelope
        number = self._next
        self._positions[number % self._records] = position
        self._hashes[number % self._records] = key_hash
        slot = key_hash & self._mask
        while self._slots[slot]:
            slot = (slot + 1) & self._mask
        self._slots[slot] = number + 1
        self._next += 1
        self._head = position + size
        self._count += 1

    def result_of(self, key: AttemptKey) -> bytes | None:
        key_bytes = _key_bytes(key)
        slot = self._slot_of_key(key_bytes, hash(key_bytes))
        if slot is None:
            return None
        offset, envelope_length, key_length = self._record(self._slots[slot] - 1)
        start = offset + self._HEADER.size + key_length
        return self._ring[start : start + envelope_length]

    @property
    def bytes_used(self) -> int:
        """Bytes of the ring between the oldest record and the newest one's end."""
        if self._oldest == self._next:
            return 0
        return self._head - self._positions[self._oldest % self._records]

    def __len__(self) -> int:
        return self._count

    def _record(self, number: int) -> tuple[int, int, int]:
        offset = self._positions[number % self._records] % self._capacity
        envelope_length, key_length = self._HEADER.unpack_from(self._ring, offset)
        return offset, envelope_length, key_length

    def _slot_of_key(self, key_bytes: bytes, key_hash: int) -> int | None:
        slot = key_hash & self._mask
        while value := self._slots[slot]:
            number = value - 1
            if self._hashes[number % self._records] == key_hash:
                offset, _, key_length = self._record(number)
                start = offset + self._HEADER.size
                if self._ring[start : start + key_length] == key_bytes:
                    return slot
            slot = (slot + 1) & self._mask
        return None

    def _forget_oldest(self) -> None:
        number = self._oldest
        self._oldest += 1
        slot = self._hashes[number % self._records] & self._mask
        while value := self._slots[slot]:
            if value == number + 1:
                self._remove_slot(slot)
                return
            slot = (slot + 1) & self._mask

    def _remove_slot(self, slot: int) -> None:
        """Empties `slot` and moves later entries of its probe run back, so that no lookup
        stops early at the hole (deletion without tombstones)."""
        hole = slot
        probe = slot
        while True:
            probe = (probe + 1) & self._mask
            value = self._slots[probe]
            if not value:
                break
            home = self._hashes[(value - 1) % self._records] & self._mask
            # The entry may move into the hole if the hole lies between its home and it.
            if (probe - home) & self._mask >= (probe - hole) & self._mask:
                self._slots[hole] = value
                hole = probe
        self._slots[hole] = 0
        self._count -= 1


def _key_bytes(key: AttemptKey) -> bytes:
    # NUL cannot occur in a tenant id or a call id (both validated at submit).
    tenant_id, service_call_id, attempt = key
    return f"{tenant_id}\0{service_call_id}\0{attempt}".encode()


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
