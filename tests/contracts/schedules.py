"""The ScheduleStore contract: the in-memory fake and the Postgres adapter both pass it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from orchestrator.domain.model import ResponseRules
from orchestrator.domain.schedules import Schedule, ScheduleState
from orchestrator.ports import ScheduleEnded, ScheduleNotFound, ScheduleStore
from tests.builders import T0, new_tenant
from tests.schedule_builders import schedule, template


class ScheduleStoreContract:
    """Subclasses provide a `store` fixture (a store of their own: claims see every tenant)."""

    async def test_a_created_schedule_reads_back_equal(self, store: ScheduleStore) -> None:
        made = schedule(
            new_tenant(),
            template=template(failure_callback_url="https://example.test/failed"),
            last_occurrence_at=T0 - timedelta(seconds=1),
        )
        assert await store.create(made)
        assert await store.get(made.tenant_id, made.schedule_id) == made

    async def test_a_template_s_response_rules_read_back(self, store: ScheduleStore) -> None:
        rules = ResponseRules(success_statuses=((404, 404),), retryable_statuses=((409, 409),))
        made = schedule(new_tenant(), template=template(response_rules=rules))
        assert await store.create(made)
        got = await store.get(made.tenant_id, made.schedule_id)
        assert got == made and got.template.response_rules == rules

    async def test_a_template_s_queue_and_key_read_back(self, store: ScheduleStore) -> None:
        made = schedule(new_tenant(), template=template(queue_id="q", ordering_key="k"))
        assert await store.create(made)
        got = await store.get(made.tenant_id, made.schedule_id)
        assert got == made and (got.template.queue_id, got.template.ordering_key) == ("q", "k")

    async def test_a_taken_id_is_refused_and_the_first_kept(self, store: ScheduleStore) -> None:
        first = schedule(new_tenant())
        assert await store.create(first)
        assert not await store.create(replace(first, description="another"))
        assert await store.get(first.tenant_id, first.schedule_id) == first

    async def test_the_same_id_in_two_tenants_is_two_schedules(self, store: ScheduleStore) -> None:
        a = schedule(new_tenant(), "same")
        b = schedule(new_tenant(), "same")
        assert await store.create(a) and await store.create(b)
        assert await store.get(a.tenant_id, "same") == a
        assert await store.get(b.tenant_id, "same") == b
        assert await store.get(new_tenant(), "same") is None

    async def test_list_pages_by_schedule_id_within_the_tenant(self, store: ScheduleStore) -> None:
        tenant = new_tenant()
        ids = [f"s-{n}" for n in (3, 1, 4, 5, 2)]
        for schedule_id in ids:
            await store.create(schedule(tenant, schedule_id))
        await store.create(schedule(new_tenant(), "s-0"))
        first = await store.list(tenant, 2, None)
        assert [s.schedule_id for s in first.items] == ["s-1", "s-2"]
        assert first.next_after == "s-2"
        second = await store.list(tenant, 2, first.next_after)
        assert [s.schedule_id for s in second.items] == ["s-3", "s-4"]
        last = await store.list(tenant, 2, second.next_after)
        assert [s.schedule_id for s in last.items] == ["s-5"]
        assert last.next_after is None
        exact = await store.list(tenant, 5, None)
        assert len(exact.items) == 5 and exact.next_after is None

    async def test_change_writes_what_the_step_gives(self, store: ScheduleStore) -> None:
        made = schedule(new_tenant())
        await store.create(made)
        paused = replace(
            made, state=ScheduleState.PAUSED, next_occurrence_at=None, version=2, description="x"
        )
        seen: list[Schedule] = []

        def step(current: Schedule) -> Schedule:
            seen.append(current)
            return paused

        assert await store.change(made.tenant_id, made.schedule_id, step) == paused
        assert seen == [made]
        assert await store.get(made.tenant_id, made.schedule_id) == paused

    async def test_a_refusing_step_writes_nothing(self, store: ScheduleStore) -> None:
        made = schedule(new_tenant())
        await store.create(made)
        outcome = await store.change(made.tenant_id, made.schedule_id, lambda _: ScheduleEnded())
        assert outcome == ScheduleEnded()
        assert await store.get(made.tenant_id, made.schedule_id) == made

    async def test_change_of_a_missing_schedule_runs_no_step(self, store: ScheduleStore) -> None:
        tenant = new_tenant()

        def step(current: Schedule) -> Schedule:
            raise AssertionError("not called")

        assert await store.change(tenant, "nope", step) == ScheduleNotFound(tenant, "nope")

    async def test_delete_gives_the_schedule_as_it_was(self, store: ScheduleStore) -> None:
        made = schedule(new_tenant())
        await store.create(made)
        assert await store.delete(made.tenant_id, made.schedule_id) == made
        assert await store.get(made.tenant_id, made.schedule_id) is None
        assert await store.delete(made.tenant_id, made.schedule_id) is None

    async def test_a_claim_takes_the_due_active_schedules_earliest_first(
        self, store: ScheduleStore
    ) -> None:
        tenant = new_tenant()
        late = schedule(tenant, "late", next_occurrence_at=T0 + timedelta(seconds=2))
        early = schedule(tenant, "early", next_occurrence_at=T0 - timedelta(seconds=5))
        later = schedule(tenant, "later", next_occurrence_at=T0 + timedelta(seconds=9))
        paused = schedule(tenant, "paused", state=ScheduleState.PAUSED)
        for s in (late, early, later, paused):
            await store.create(s)
        seen: list[str] = []

        async def advance(s: Schedule) -> Schedule:
            seen.append(s.schedule_id)
            return s

        assert await store.claim_due(T0 + timedelta(seconds=3), 1, advance) == 1
        assert seen == ["early"]
        seen.clear()
        assert await store.claim_due(T0 + timedelta(seconds=3), 10, advance) == 2
        assert sorted(seen) == ["early", "late"]

    async def test_a_claim_writes_only_the_occurrences_and_state(
        self, store: ScheduleStore
    ) -> None:
        made = schedule(new_tenant())
        await store.create(made)
        next_at = T0 + timedelta(seconds=10)

        async def advance(s: Schedule) -> Schedule:
            return replace(
                s,
                next_occurrence_at=None,
                last_occurrence_at=next_at,
                state=ScheduleState.ENDED,
                description="not written",
                version=99,
            )

        assert await store.claim_due(T0 + timedelta(seconds=3), 10, advance) == 1
        assert await store.get(made.tenant_id, made.schedule_id) == replace(
            made, next_occurrence_at=None, last_occurrence_at=next_at, state=ScheduleState.ENDED
        )
        # Ended: never claimed again.
        assert await store.claim_due(T0 + timedelta(days=1), 10, advance) == 0

    async def test_a_claim_whose_advance_raises_writes_nothing(self, store: ScheduleStore) -> None:
        a = schedule(new_tenant())
        b = schedule(new_tenant())
        await store.create(a)
        await store.create(b)

        async def advance(s: Schedule) -> Schedule:
            if s.schedule_id == b.schedule_id:
                raise RuntimeError("boom")
            return replace(s, next_occurrence_at=T0 + timedelta(hours=1))

        with pytest.raises(RuntimeError):
            await store.claim_due(T0 + timedelta(seconds=3), 10, advance)
        assert await store.get(a.tenant_id, a.schedule_id) == a
        assert await store.get(b.tenant_id, b.schedule_id) == b

    async def test_two_concurrent_claims_never_hold_one_schedule(
        self, store: ScheduleStore
    ) -> None:
        made = [schedule(new_tenant()) for _ in range(6)]
        for s in made:
            await store.create(s)
        held: list[str] = []
        first_in = asyncio.Event()
        both_in = asyncio.Event()
        entered = 0

        async def advance(s: Schedule) -> Schedule:
            nonlocal entered
            held.append(s.schedule_id)
            entered += 1
            if entered == 3:
                first_in.set()
            if entered == len(made):
                both_in.set()
            # Hold the claim until the other pass has claimed what it could.
            await asyncio.wait_for(both_in.wait(), 5)
            return replace(s, next_occurrence_at=T0 + timedelta(hours=1))

        until = T0 + timedelta(seconds=3)
        first = asyncio.create_task(store.claim_due(until, 3, advance))
        await asyncio.wait_for(first_in.wait(), 5)  # the first claim holds its three
        second = await store.claim_due(until, 10, advance)
        assert await first == 3
        assert second == 3
        assert sorted(held) == sorted(s.schedule_id for s in made)

    async def test_a_change_waits_for_the_claim_that_holds_the_schedule(
        self, store: ScheduleStore
    ) -> None:
        made = schedule(new_tenant())
        await store.create(made)
        claimed = asyncio.Event()
        release = asyncio.Event()
        moved_on = T0 + timedelta(seconds=7)

        async def advance(s: Schedule) -> Schedule:
            claimed.set()
            await asyncio.wait_for(release.wait(), 5)
            return replace(s, next_occurrence_at=moved_on, last_occurrence_at=T0)

        claim = asyncio.create_task(store.claim_due(T0 + timedelta(seconds=3), 10, advance))
        await asyncio.wait_for(claimed.wait(), 5)
        seen: list[Schedule] = []

        def step(current: Schedule) -> Schedule:
            seen.append(current)
            return replace(current, description="changed", version=current.version + 1)

        change = asyncio.create_task(store.change(made.tenant_id, made.schedule_id, step))
        await asyncio.sleep(0.2)
        assert not change.done()  # held by the claim
        release.set()
        await claim
        changed = await change
        # The change was decided on the claim's outcome, so it keeps it.
        assert seen[0].next_occurrence_at == moved_on and seen[0].last_occurrence_at == T0
        assert isinstance(changed, Schedule) and changed.next_occurrence_at == moved_on
