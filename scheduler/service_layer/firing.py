"""The firing loop: sleeps exactly until the next timer, claims what is due, publishes, marks.

At least once: a timer is marked fired only after Kafka acknowledged its DueTimeReached; a
process that dies between claim and mark leaves the claim to expire, and the timer fires
again (with the same event id, so the orchestrator's inbox drops the repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from mesh.logs import get_logger
from mesh.ports import Clock
from scheduler.domain.window import TimerWindow
from scheduler.ports import FiredTimers, TimerStore

log = get_logger(__name__)

# Crowded hand-offs are claimed a little ahead of their pulled-forward times, in chunks: one
# claim per hand-off would cost a round of claim, publish and mark each.
EARLY_CHUNK = timedelta(milliseconds=50)


class Firer:
    """Fires due timers at least once, sleeping exactly until the next one in between.

    Waking: the near-term window (scheduler/domain/window.py) holds the next attention times,
    loaded from Postgres in one bounded read; timers armed in this process are pushed into it
    and wake the loop at once if earlier. The loop reloads at least every `refresh`, which is
    how it notices timers armed by another replica, or claims another replica left unfinished
    (a replica arms the timers of its own Kafka partitions and fires them itself in the normal
    case; a survivor only has to take over after a death, which `refresh` bounds). LISTEN/NOTIFY
    is not needed for that and would cost a dedicated connection per replica.

    Two replicas do not fire one timer twice in the normal case: a claim is an UPDATE of rows
    picked `FOR UPDATE SKIP LOCKED` that sets `claimed_until`; a concurrent claimer skips the
    locked rows, and once the claim commits, its predicate (`claimed_until <= now`) excludes
    them until the lease ends. A second fire therefore needs the lease to run out before the
    first replica marked the timer fired: it died or stalled for longer than the lease. That
    repeat carries the same event id, and the orchestrator's inbox drops it.
    """

    def __init__(
        self,
        store: TimerStore,
        fired_timers: FiredTimers,
        clock: Clock,
        batch_size: int = 500,
        claim_lease: timedelta = timedelta(seconds=10),
        max_sleep: timedelta = timedelta(seconds=1),
        retention: timedelta = timedelta(hours=1),
        window_span: timedelta = timedelta(minutes=5),
        window_capacity: int = 16384,
        handoff_pull_rate: float = 0.0,
        handoff_pull_max: timedelta = timedelta(0),
        sleeper: Sleeper | None = None,
    ) -> None:
        self._store = store
        self._fired_timers = fired_timers
        self._clock = clock
        self._batch_size = batch_size
        self._claim_lease = claim_lease
        self._refresh = max_sleep
        self._retention = retention
        self._window = TimerWindow(
            window_span, window_capacity, pull_rate=handoff_pull_rate, pull_max=handoff_pull_max
        )
        self._window_capacity = window_capacity
        self._sleeper = sleeper or _sleep_until_woken
        self._wake = asyncio.Event()
        self._loaded_at: datetime | None = None
        self._crowded = False
        self.fired = 0

    @property
    def window(self) -> TimerWindow:
        return self._window

    def armed(self, fire_at: datetime) -> None:
        """A timer was armed in this process: wake up if it is due before the current sleep."""
        if self._window.arm(fire_at):
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        last_prune = self._clock.now()
        while not stop.is_set():
            try:
                await self.step(stop)
                now = self._clock.now()
                if now - last_prune > timedelta(minutes=1) and not self._window.due(now):
                    await self._store.prune(now - self._retention)
                    last_prune = now
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("firing loop failed; retrying")
                self._loaded_at = None  # trust nothing in memory after a failure
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

    async def step(self, stop: asyncio.Event) -> int:
        """One turn: reload the window if it is stale, fire what is due, else sleep until the
        next attention time (or an earlier arm, or stop). Returns how many fired."""
        now = self._clock.now()
        if (
            self._loaded_at is None
            or self._window.needs_load(now)
            or now - self._loaded_at >= self._refresh
        ):
            await self._load(now)
        if self._window.due(now):
            return await self.fire_due(now)
        # Clear before computing the wake time: an arm that lands after this line sets the
        # event again, so its wake-up cannot be lost.
        self._wake.clear()
        wake_at = self._window.next_wake(now, self._refresh - (now - (self._loaded_at or now)))
        await self._sleeper(self._clock, wake_at, self._wake, stop)
        return 0

    async def _load(self, now: datetime) -> None:
        upcoming = await self._store.upcoming(now + self._window.span, self._window_capacity)
        self._window.load(now, upcoming, truncated=len(upcoming) >= self._window_capacity)
        self._loaded_at = now

    async def fire_due(self, now: datetime | None = None) -> int:
        now = now or self._clock.now()
        # In a crowd (the last claim was a full batch, so more may be due than one claim
        # takes), tenants take turns; otherwise fire-time order, the cheaper claim.
        due = list(
            await self._store.claim_due(
                now, self._batch_size, self._claim_lease, by_tenant=self._crowded
            )
        )
        self._crowded = len(due) >= self._batch_size
        if len(due) < self._batch_size:
            # Crowded hand-offs whose pulled-forward time has come (window.py). Looked for only
            # once the overdue timers are all claimed: while a backlog fills whole batches the
            # window still holds every overdue entry, and counting through them each batch
            # would cost more than the claim.
            early, until = self._window.early_handoffs(now, EARLY_CHUNK)
            if early:
                room = min(early, self._batch_size - len(due))
                # In fire-time order, not by tenant, though ties go in the order they were
                # armed: the pull schedule already has every one of them fired by its own
                # fire time, the last tenant to arm too, and a claim by tenant sorts the
                # whole crowd (~40 ms for 20,000) where these claims come every 50 ms (with
                # them, the 10k burst drained in 5.5 s against ~1 s: docs/timing.md).
                due += await self._store.claim_due(
                    now, room, self._claim_lease, handoffs_until=until
                )
        if len(due) < self._batch_size:
            # Everything due at `now` that nobody else holds is in these claims.
            self._window.fired_up_to(now, EARLY_CHUNK)
        if not due:
            return 0
        try:
            await self._fired_timers.publish(due, now)
            # claim_due holds its timers until now + lease: that names this firer's claim.
            marked = await self._store.mark_fired(
                [t.timer_id for t in due], self._clock.now(), now + self._claim_lease
            )
        except Exception:
            # The claim stays until its lease ends; look again then (at least once).
            self._window.retry_at(now + self._claim_lease)
            raise
        if marked < len(due):
            # Our lease ran out before the mark (a stall); another firer claimed them and
            # fires them too. The orchestrator's inbox and guards take the repeat.
            log.warning("timers fired after their claim was lost", fired=len(due), marked=marked)
        self.fired += len(due)
        return len(due)


Sleeper = Callable[[Clock, datetime, asyncio.Event, asyncio.Event], Awaitable[None]]


async def _sleep_until_woken(
    clock: Clock, until: datetime, wake: asyncio.Event, stop: asyncio.Event
) -> None:
    """Sleeps until the wall clock reaches `until`, or `wake` or `stop` is set."""
    delay = (until - clock.now()).total_seconds()
    if delay <= 0:
        return
    waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
