"""Which offsets of a partition may be committed while messages finish out of order."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

# Finished offsets kept in the heap before a compaction is considered (see `finish`).
_COMPACT_AT = 64


@dataclass
class PartitionProgress:
    """Tracks started and finished offsets of one partition.

    Handlers run concurrently and finish in any order, but Kafka only stores one committed
    offset per partition, meaning "everything below is done". So the committable position is
    one past the highest offset below which every started message has finished; committing
    further would lose a message still in flight if the process died.

    Memory is O(unfinished): offsets that finish above a stuck one are dropped from the heap
    in a compaction once they outnumber the unfinished ones, so a message stuck for hours
    while the partition moves on costs a few entries, not one per message handled since.
    """

    _pending: list[int] = field(default_factory=list)  # heap of started offsets, some finished
    _done: set[int] = field(default_factory=set)  # finished offsets still in the heap
    _highest_started: int = -1

    def start(self, offset: int) -> None:
        heapq.heappush(self._pending, offset)
        self._highest_started = max(self._highest_started, offset)

    def finish(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            self._done.discard(heapq.heappop(self._pending))
        if len(self._done) > _COMPACT_AT and 2 * len(self._done) > len(self._pending):
            # Amortised O(1): at least half the heap is dropped each time.
            self._pending = [o for o in self._pending if o not in self._done]
            heapq.heapify(self._pending)
            self._done.clear()

    def committable(self) -> int | None:
        """The offset to commit (next to read), or None when nothing new finished."""
        if self._pending:
            low = self._pending[0]
            return low if low > 0 else None
        if self._highest_started < 0:
            return None
        return self._highest_started + 1

    @property
    def in_flight(self) -> int:
        return len(self._pending) - len(self._done)

    @property
    def tracked(self) -> int:
        """Offsets held in memory (a measure of this object's size, for tests and metrics)."""
        return len(self._pending) + len(self._done)
