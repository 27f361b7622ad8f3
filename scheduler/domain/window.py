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

Crowded hand-offs. Every hand-off goes through the orchestrator (a transaction) and Kafka
before the executor holds it, and that pipeline takes only so many per second; 10k calls due
in the same second would reach the executor seconds after their due time if all their
hand-offs fired at due − lead. So a load gives each hand-off timer no claim holds an
attention time pulled forward just enough that, taken in fire-time order at `pull_rate` per
second, every one has fired by its own fire time: going from the latest back,
    attention(i) = min(fire(i), attention(i+1) − 1/pull_rate),
and never more than `pull_max` before its fire time (the orchestrator accepts a hand-off that
much early, Timing.handoff_early_max). A lone call, or calls spread thinner than the rate, keeps
its fire time. The recurrence only looks at loaded rows, so the capacity must cover
pull_rate × pull_max rows for it to see a whole crowd; a truncated load pulls less, never more.
The attention times stay in fire-time order, so the hand-offs to claim early are "the first N
firing by T" (`early_handoffs`), however many share a fire time.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime, timedelta

from scheduler.domain.timers import Upcoming

# (attention time, fire time, pulled forward): the heap orders by the first.
_Entry = tuple[datetime, datetime, bool]


class TimerWindow:
    def __init__(
        self,
        span: timedelta,
        capacity: int,
        pull_rate: float = 0.0,
        pull_max: timedelta = timedelta(0),
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        if pull_rate < 0 or pull_max < timedelta(0):
            raise ValueError("pull_rate and pull_max must not be negative")
        self._span = span
        self._capacity = capacity
        # 0: hand-offs fire at their own time, however crowded.
        self._pull_gap = timedelta(seconds=1 / pull_rate) if pull_rate > 0 else None
        self._pull_max = pull_max
        self._heap: list[_Entry] = []
        self.complete_until: datetime | None = None

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def span(self) -> timedelta:
        return self._span

    def load(self, now: datetime, upcoming: Sequence[Upcoming], truncated: bool) -> None:
        """Replaces the window with a fresh read of the pending timers firing before
        `now + span`, by fire time; `truncated` if the read hit its limit. Then the last row's
        FIRE time bounds what is known: an unread timer fires no earlier, and its attention
        time (fire time or later lease end) is no earlier either."""
        self._heap = self._attention_times(upcoming)
        heapq.heapify(self._heap)
        if truncated and upcoming:
            self.complete_until = max(upcoming[-1][0], now)
        else:
            self.complete_until = now + self._span
        self._trim()

    def _attention_times(self, upcoming: Sequence[Upcoming]) -> list[_Entry]:
        gap = self._pull_gap
        if gap is None:
            return [(u.attention, u.fire_at, False) for u in upcoming]
        entries: list[_Entry] = []
        later: datetime | None = None  # attention of the next hand-off in fire-time order
        for u in reversed(upcoming):
            attention = u.attention
            if u.may_fire_early:
                if later is not None and later - gap < attention:
                    attention = max(later - gap, u.fire_at - self._pull_max)
                later = attention
            entries.append((attention, u.fire_at, attention < u.fire_at))
        return entries

    def needs_load(self, now: datetime) -> bool:
        return self.complete_until is None or now >= self.complete_until

    def arm(self, at: datetime) -> bool:
        """Notes a timer armed in this process; True if the loop should wake for it (it is
        earlier than anything the loop is now sleeping towards)."""
        wake = not self._heap or at < self._heap[0][0]
        if self.complete_until is not None and at < self.complete_until:
            heapq.heappush(self._heap, (at, at, False))
            self._trim()
        elif self.complete_until is None:
            wake = True  # nothing loaded yet: the loop loads first anyway
        return wake

    def due(self, now: datetime) -> bool:
        return bool(self._heap) and self._heap[0][0] <= now

    def early_handoffs(self, now: datetime, ahead: timedelta) -> tuple[int, datetime]:
        """How many pulled-forward hand-offs firing after `now` need attention by `now + ahead`,
        and the latest fire time among them (`now` if none): claiming that many hand-offs
        firing by it, earliest first, takes them. `ahead` lets one claim take a chunk of a
        crowd; a hand-off that was not pulled forward fires at its own time."""
        count, until = 0, now
        for _attention, fire_at, pulled in self._peek(now + ahead):
            if pulled and fire_at > now:
                count += 1
                until = max(until, fire_at)
        return count, until

    def _peek(self, until: datetime) -> list[_Entry]:
        taken: list[_Entry] = []
        while self._heap and self._heap[0][0] <= until:
            taken.append(heapq.heappop(self._heap))
        for entry in taken:
            heapq.heappush(self._heap, entry)
        return taken

    def fired_up_to(self, now: datetime, ahead: timedelta = timedelta(0)) -> None:
        """Everything due at `now`, and the hand-offs `early_handoffs(now, ahead)` counted,
        was claimed (the claims returned less than a full batch): drop those entries. A claim
        that is never marked fired comes back through a reload, or through `retry_at` in
        this process."""
        kept: list[_Entry] = []
        while self._heap and self._heap[0][0] <= now + ahead:
            entry = heapq.heappop(self._heap)
            if entry[0] > now and not entry[2]:
                kept.append(entry)  # not due yet, and not pulled forward
        for entry in kept:
            heapq.heappush(self._heap, entry)

    def retry_at(self, at: datetime) -> None:
        """A claim of this process failed to complete: look again when its lease ends."""
        heapq.heappush(self._heap, (at, at, False))
        self._trim()

    def next_wake(self, now: datetime, refresh: timedelta) -> datetime:
        """The earliest of: the next entry, the end of what the window knows, and the refresh
        deadline (for timers armed elsewhere). Never before `now`."""
        candidates = [now + refresh]
        if self._heap:
            candidates.append(self._heap[0][0])
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
            self.complete_until = min(self.complete_until, kept[-1][0])
