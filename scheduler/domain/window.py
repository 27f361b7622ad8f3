"""The near-term window: when the firing loop must next look at Postgres. Pure, no I/O.

Postgres holds every pending timer and decides what fires (claims); this window only decides
WHEN to wake. It holds the attention times (fire time, or end of a claim's lease) of the
earliest pending timers, at most `capacity` of them, so memory stays flat however many timers
are pending (1M pending cost the same few kilobytes as 10). The loop sleeps until the earliest
entry; a timer armed in this process is pushed in and wakes the loop if it is earlier.

`complete_until` is the promise the window keeps: every pending timer needing attention
before it is in the heap (or was armed here after loading). A load that hit `capacity` is
complete only up to its last row; past `complete_until` the loop must load again before it may
trust the heap. Timers armed or claimed by ANOTHER replica are not pushed here; the loop
therefore reloads at least every `refresh` (see Firer), which bounds how late it notices them.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime, timedelta


class TimerWindow:
    def __init__(self, span: timedelta, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._span = span
        self._capacity = capacity
        self._heap: list[datetime] = []
        self.complete_until: datetime | None = None

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def span(self) -> timedelta:
        return self._span

    def load(
        self, now: datetime, upcoming: Sequence[tuple[datetime, datetime]], truncated: bool
    ) -> None:
        """Replaces the window with a fresh read of (fire time, attention time) of the pending
        timers firing before `now + span`, by fire time; `truncated` if the read hit its limit.
        Then the last row's FIRE time bounds what is known: an unread timer fires no earlier,
        and its attention time (fire time or later lease end) is no earlier either."""
        self._heap = [attention for _fire_at, attention in upcoming]
        heapq.heapify(self._heap)
        if truncated and upcoming:
            self.complete_until = max(upcoming[-1][0], now)
        else:
            self.complete_until = now + self._span
        self._trim()

    def needs_load(self, now: datetime) -> bool:
        return self.complete_until is None or now >= self.complete_until

    def arm(self, at: datetime) -> bool:
        """Notes a timer armed in this process; True if the loop should wake for it (it is
        earlier than anything the loop is now sleeping towards)."""
        wake = not self._heap or at < self._heap[0]
        if self.complete_until is not None and at < self.complete_until:
            heapq.heappush(self._heap, at)
            self._trim()
        elif self.complete_until is None:
            wake = True  # nothing loaded yet: the loop loads first anyway
        return wake

    def due(self, now: datetime) -> bool:
        return bool(self._heap) and self._heap[0] <= now

    def fired_up_to(self, now: datetime) -> None:
        """Everything due at `now` was claimed (the claim returned less than a full batch):
        drop those entries. A claim that is never marked fired comes back through a reload,
        or through `retry_at` in this process."""
        while self._heap and self._heap[0] <= now:
            heapq.heappop(self._heap)

    def retry_at(self, at: datetime) -> None:
        """A claim of this process failed to complete: look again when its lease ends."""
        heapq.heappush(self._heap, at)
        self._trim()

    def next_wake(self, now: datetime, refresh: timedelta) -> datetime:
        """The earliest of: the next entry, the end of what the window knows, and the refresh
        deadline (for timers armed elsewhere). Never before `now`."""
        candidates = [now + refresh]
        if self._heap:
            candidates.append(self._heap[0])
        if self.complete_until is not None:
            candidates.append(self.complete_until)
        return max(now, min(candidates))

    def _trim(self) -> None:
        # Over capacity: forget the latest entries and shrink the promise to match, so memory
        # stays bounded and nothing forgotten is trusted to be absent.
        if len(self._heap) <= self._capacity:
            return
        kept = heapq.nsmallest(self._capacity, self._heap)
        self._heap = kept  # sorted, hence a valid heap
        if self.complete_until is not None:
            self.complete_until = min(self.complete_until, kept[-1])
