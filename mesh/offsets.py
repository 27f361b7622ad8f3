"""Which offsets of a partition may be committed while messages finish out of order."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class PartitionProgress:
    """Tracks started and finished offsets of one partition.

    Handlers run concurrently and finish in any order, but Kafka only stores one committed
    offset per partition, meaning "everything below is done". So the committable position is
    one past the highest offset below which every started message has finished; committing
    further would lose a message still in flight if the process died.
    """

    _pending: list[int] = field(default_factory=list)  # heap of started, unfinished offsets
    _done: set[int] = field(default_factory=set)
    _highest_started: int = -1

    def start(self, offset: int) -> None:
        heapq.heappush(self._pending, offset)
        self._highest_started = max(self._highest_started, offset)

    def finish(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            self._done.discard(heapq.heappop(self._pending))

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
        return len(self._pending)
