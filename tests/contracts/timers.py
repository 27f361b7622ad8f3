"""The TimerStore contract: the in-memory fake and the Postgres adapter both pass it."""

from __future__ import annotations

import uuid
from datetime import timedelta

from scheduler.domain.timers import HANDOFF_PURPOSE, Timer, TimerKey, TimerState, Upcoming
from scheduler.ports import TimerStore
from tests.builders import T0

LEASE = timedelta(seconds=10)


def timer(
    fire_in: float,
    armed_by: str | None = None,
    attempt: int = 1,
    purpose: int = HANDOFF_PURPOSE,
    tenant_id: str = "t",
) -> Timer:
    return Timer(
        key=TimerKey(
            tenant_id=tenant_id,
            service_call_id=str(uuid.uuid4()),
            purpose=purpose,
            attempt=attempt,
            fire_at=T0 + timedelta(seconds=fire_in),
        ),
        armed_by=armed_by or f"event-{uuid.uuid4()}",
        correlation_id="c",
        sequence=2,
    )


class TimerStoreContract:
    """Subclasses provide a `timers` fixture: an empty store."""

    async def test_arming_twice_is_harmless(self, timers: TimerStore) -> None:
        t = timer(5)
        assert await timers.arm(t) is True
        assert await timers.arm(t) is False
        assert await timers.get(t.timer_id) == t

    async def test_claims_only_due_timers_earliest_first(self, timers: TimerStore) -> None:
        late, early, future = timer(2), timer(1), timer(60)
        for t in (late, early, future):
            await timers.arm(t)
        claimed = await timers.claim_due(T0 + timedelta(seconds=3), 10, LEASE)
        assert [t.timer_id for t in claimed] == [early.timer_id, late.timer_id]

    async def test_claim_is_exclusive_until_its_lease_ends(self, timers: TimerStore) -> None:
        t = timer(0)
        await timers.arm(t)
        assert len(await timers.claim_due(T0, 10, LEASE)) == 1
        assert await timers.claim_due(T0 + timedelta(seconds=1), 10, LEASE) == []
        # Never marked fired (the claimer died): claimable again after the lease.
        again = await timers.claim_due(T0 + LEASE, 10, LEASE)
        assert [x.timer_id for x in again] == [t.timer_id]

    async def test_fired_timers_are_not_claimed_again(self, timers: TimerStore) -> None:
        t = timer(0)
        await timers.arm(t)
        await timers.claim_due(T0, 10, LEASE)
        await timers.mark_fired([t.timer_id], T0, T0 + LEASE)
        assert await timers.claim_due(T0 + timedelta(hours=1), 10, LEASE) == []
        stored = await timers.get(t.timer_id)
        assert stored is not None and stored.state is TimerState.FIRED

    async def test_redelivered_arm_does_not_rearm_but_a_new_request_does(
        self, timers: TimerStore
    ) -> None:
        t = timer(0, armed_by="first")
        await timers.arm(t)
        await timers.claim_due(T0, 10, LEASE)
        await timers.mark_fired([t.timer_id], T0, T0 + LEASE)
        assert await timers.arm(t) is False
        rearmed = Timer(t.key, "second", t.correlation_id, t.sequence)
        assert await timers.arm(rearmed) is True
        claimed = await timers.claim_due(T0, 10, LEASE)
        assert [x.armed_by for x in claimed] == ["second"]

    async def test_next_fire_at_sees_pending_and_lease_ends(self, timers: TimerStore) -> None:
        assert await timers.next_fire_at() is None
        t1, t2 = timer(1), timer(30)
        await timers.arm(t1)
        await timers.arm(t2)
        assert await timers.next_fire_at() == t1.key.fire_at
        await timers.claim_due(T0 + timedelta(seconds=1), 1, LEASE)
        # t1 is claimed: its next attention time is its lease end (T0+11s), before t2.
        assert await timers.next_fire_at() == T0 + timedelta(seconds=1) + LEASE

    async def test_upcoming_is_bounded_and_sees_lease_ends(self, timers: TimerStore) -> None:
        t1, t2, t3, far = timer(1), timer(2), timer(3), timer(3600)
        for t in (t3, far, t1, t2):
            await timers.arm(t)
        await timers.claim_due(T0 + timedelta(seconds=1), 1, LEASE)  # claims t1
        upcoming = await timers.upcoming(T0 + timedelta(minutes=1), 10)
        assert upcoming == [
            # Claimed: not pulled forward again, whatever its purpose.
            Upcoming(t1.key.fire_at, T0 + timedelta(seconds=1) + LEASE, False),
            Upcoming(t2.key.fire_at, t2.key.fire_at, True),
            Upcoming(t3.key.fire_at, t3.key.fire_at, True),
        ]
        assert [u.fire_at for u in await timers.upcoming(T0 + timedelta(minutes=1), 2)] == [
            t1.key.fire_at,
            t2.key.fire_at,
        ]

    async def test_a_claim_by_tenant_gives_each_tenant_a_turn(self, timers: TimerStore) -> None:
        # A crowd of tenant a's, due before b's one timer and c's two: by fire time a takes
        # every claim until its crowd is gone; by tenant, each tenant's earliest comes first.
        crowd = [timer(i / 10, tenant_id="a") for i in range(6)]
        b = timer(1, tenant_id="b")
        c1, c2 = timer(1.5, tenant_id="c"), timer(1.6, tenant_id="c")
        await timers.arm_many([*crowd, b, c1, c2])
        now = T0 + timedelta(seconds=2)
        claimed = await timers.claim_due(now, 4, LEASE, by_tenant=True)
        # Returned, as every claim, in fire-time order.
        assert [t.timer_id for t in claimed] == [
            crowd[0].timer_id,
            crowd[1].timer_id,
            b.timer_id,
            c1.timer_id,
        ]
        # Fewer than asked for: nothing else was claimable.
        rest = await timers.claim_due(now, 10, LEASE, by_tenant=True)
        assert [t.timer_id for t in rest] == [t.timer_id for t in (*crowd[2:], c2)]
        assert await timers.claim_due(now, 10, LEASE, by_tenant=True) == []

    async def test_a_claim_by_tenant_takes_early_hand_offs_too(self, timers: TimerStore) -> None:
        crowd = [timer(5, tenant_id="a") for _ in range(5)]
        last = timer(5, tenant_id="b")  # armed last, due with the crowd
        await timers.arm_many([*crowd, last])
        claimed = await timers.claim_due(
            T0, 2, LEASE, handoffs_until=T0 + timedelta(seconds=5), by_tenant=True
        )
        assert last.timer_id in {t.timer_id for t in claimed}

    async def test_only_hand_off_timers_are_claimed_before_their_fire_time(
        self, timers: TimerStore
    ) -> None:
        handoff, other, later = timer(5), timer(5, purpose=HANDOFF_PURPOSE + 1), timer(9)
        for t in (handoff, other, later):
            await timers.arm(t)
        assert [u.may_fire_early for u in await timers.upcoming(T0 + timedelta(minutes=1), 10)] == [
            True,
            False,
            True,
        ]
        claimed = await timers.claim_due(T0, 10, LEASE, handoffs_until=T0 + timedelta(seconds=6))
        assert [t.timer_id for t in claimed] == [handoff.timer_id]
        # Without the bound, nothing fires before its time.
        assert await timers.claim_due(T0 + timedelta(seconds=4), 10, LEASE) == []
        # The other purpose waits for its own time even under a later bound.
        claimed = await timers.claim_due(
            T0 + timedelta(seconds=4), 10, LEASE, handoffs_until=T0 + timedelta(seconds=10)
        )
        assert [t.timer_id for t in claimed] == [later.timer_id]
        claimed = await timers.claim_due(T0 + timedelta(seconds=5), 10, LEASE)
        assert [t.timer_id for t in claimed] == [other.timer_id]

    async def test_cancel_and_list_pending(self, timers: TimerStore) -> None:
        ts = [timer(i) for i in range(5)]
        for t in ts:
            await timers.arm(t)
        canceled = await timers.cancel(ts[2].timer_id, T0)
        assert canceled is not None and canceled.state is TimerState.CANCELED
        assert await timers.cancel(ts[2].timer_id, T0) is None
        first = await timers.list_pending(2, None)
        rest = await timers.list_pending(10, (first[-1].key.fire_at, first[-1].timer_id))
        assert [t.timer_id for t in [*first, *rest]] == [t.timer_id for t in ts if t is not ts[2]]

    async def test_prune_removes_only_ended_timers(self, timers: TimerStore) -> None:
        done, pending = timer(0), timer(100)
        await timers.arm(done)
        await timers.arm(pending)
        await timers.claim_due(T0, 10, LEASE)
        await timers.mark_fired([done.timer_id], T0, T0 + LEASE)
        assert await timers.prune(T0 + timedelta(seconds=1)) == 1
        assert await timers.get(done.timer_id) is None
        assert await timers.get(pending.timer_id) is not None

    async def test_arm_many_arms_each_new_timer_once(self, timers: TimerStore) -> None:
        a, b = timer(5), timer(6)
        assert await timers.arm(a) is True
        armed = await timers.arm_many([a, b, b, timer(7, armed_by=b.armed_by)])
        assert b.timer_id in armed and a.timer_id not in armed
        assert len(armed) == 2
        assert await timers.get(b.timer_id) == b
        assert await timers.arm_many([]) == set()

    async def test_arm_many_rearms_a_fired_timer_for_a_new_request(
        self, timers: TimerStore
    ) -> None:
        t = timer(0, armed_by="first")
        await timers.arm(t)
        await timers.claim_due(T0, 10, LEASE)
        await timers.mark_fired([t.timer_id], T0, T0 + LEASE)
        rearm = Timer(t.key, "second", t.correlation_id, t.sequence)
        assert await timers.arm_many([t, rearm]) == set()  # first occurrence wins: a redelivery
        assert await timers.arm_many([rearm]) == {t.timer_id}

    async def test_only_the_claims_holder_marks_a_timer_fired(self, timers: TimerStore) -> None:
        # Regression (issue #12, 10): mark_fired did not check the claim, so a firer that
        # stalled past its lease could end a timer another firer held, or one re-armed since.
        t = timer(0, armed_by="first")
        await timers.arm(t)
        assert len(await timers.claim_due(T0, 10, LEASE)) == 1  # the first firer, then stalls
        assert len(await timers.claim_due(T0 + LEASE, 10, LEASE)) == 1  # the second
        # The first wakes up while the second holds it: its mark is refused.
        assert await timers.mark_fired([t.timer_id], T0 + LEASE, T0 + LEASE) == 0
        assert (await timers.get(t.timer_id)) == t
        assert await timers.mark_fired([t.timer_id], T0 + LEASE, T0 + 2 * LEASE) == 1

        # Fired and re-armed by a new request: a late mark of the first claim leaves it armed.
        rearmed = Timer(t.key, "second", t.correlation_id, t.sequence)
        assert await timers.arm(rearmed) is True
        assert await timers.mark_fired([t.timer_id], T0 + 3 * LEASE, T0 + LEASE) == 0
        assert await timers.get(t.timer_id) == rearmed
        claimed = await timers.claim_due(T0 + 3 * LEASE, 10, LEASE)
        assert [x.armed_by for x in claimed] == ["second"]
