"""The ServiceCallStore contract: the in-memory fake and the Postgres adapter both pass it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

from mesh.ports import OutgoingMessage
from orchestrator.domain.commands import (
    CancelServiceCall,
    RecordExecutionFailed,
    RecordExecutionStarted,
    RecordExecutionSucceeded,
    RunServiceCallNow,
)
from orchestrator.domain.errors import AlreadySubmitted, IdempotencyConflict
from orchestrator.domain.model import DEFAULT_TIMING, ExecutionResult
from orchestrator.domain.states import Canceled, Dispatched, Running, Scheduled, Status
from orchestrator.ports import ListQuery, ServiceCallStore, Step, Transition
from tests.builders import T0, new_tenant, spec, step_for, submit_step

MIB = 1024 * 1024


class ServiceCallStoreContract:
    """Subclasses provide a `store` fixture."""

    async def test_unknown_call_is_none(self, store: ServiceCallStore) -> None:
        assert await store.get(new_tenant(), "00000000-0000-0000-0000-000000000000") is None

    async def test_submitted_call_reads_back_equal(self, store: ServiceCallStore) -> None:
        call = spec(new_tenant(), tags=frozenset({"a", "b"}))
        transition = await store.transact(
            call.tenant_id, call.service_call_id, submit_step(call, T0 + timedelta(hours=1))
        )
        assert transition is not None and isinstance(transition.state, Scheduled)
        assert await store.get(call.tenant_id, call.service_call_id) == transition.state

    async def test_event_id_applies_once(self, store: ServiceCallStore) -> None:
        call = spec(new_tenant())
        await store.transact(
            call.tenant_id, call.service_call_id, submit_step(call, T0 + timedelta(hours=1))
        )
        calls = 0

        def counting(step: Step) -> Step:
            def wrapped(state):  # type: ignore[no-untyped-def]
                nonlocal calls
                calls += 1
                return step(state)

            return wrapped

        cancel = counting(step_for(CancelServiceCall(reason="r"), T0))
        first = await store.transact(
            call.tenant_id, call.service_call_id, cancel, event_id=f"{call.service_call_id}-e1"
        )
        second = await store.transact(
            call.tenant_id, call.service_call_id, cancel, event_id=f"{call.service_call_id}-e1"
        )
        assert first is not None and isinstance(first.state, Canceled)
        assert second is None
        assert calls == 1

    async def test_rejection_writes_nothing(self, store: ServiceCallStore) -> None:
        call = spec(new_tenant())
        await store.transact(call.tenant_id, call.service_call_id, submit_step(call, T0))
        before = await store.get(call.tenant_id, call.service_call_id)
        assert isinstance(before, Dispatched)  # due at once: handed off in the same decision
        rejected = await store.transact(
            call.tenant_id, call.service_call_id, step_for(CancelServiceCall(reason="late"), T0)
        )
        assert rejected is not None and rejected.rejection is not None
        assert await store.get(call.tenant_id, call.service_call_id) == before

    async def test_concurrent_changes_of_one_call_serialise(self, store: ServiceCallStore) -> None:
        call = spec(new_tenant())
        await store.transact(
            call.tenant_id, call.service_call_id, submit_step(call, T0 + timedelta(hours=1))
        )

        def bump(state):  # type: ignore[no-untyped-def]
            # Reschedule to "now" repeatedly: each applied step adds events, so the version
            # counts how many steps ran on the state the previous one left.
            return (
                step_for(RunServiceCallNow(), T0)(state)
                if isinstance(state, Scheduled)
                else Transition(state)
            )

        results = await asyncio.gather(
            *(store.transact(call.tenant_id, call.service_call_id, bump) for _ in range(8))
        )
        applied = [r for r in results if r is not None and r.events]
        assert len(applied) == 1  # the first moves it to DISPATCHED; the rest see that
        final = await store.get(call.tenant_id, call.service_call_id)
        assert isinstance(final, Dispatched)

    async def test_a_step_that_raises_fails_only_its_own_fact(
        self, store: ServiceCallStore
    ) -> None:
        """Facts arriving together may be written in one batch (the Postgres store does):
        one that cannot be applied must not fail the others, nor be marked as applied."""
        calls = [spec(new_tenant()) for _ in range(6)]
        for call in calls:
            await store.transact(
                call.tenant_id, call.service_call_id, submit_step(call, T0 + timedelta(hours=1))
            )
        poisoned = calls[2]

        def raising(_state):  # type: ignore[no-untyped-def]
            raise ValueError("this fact cannot be applied")

        cancel = step_for(CancelServiceCall(reason="r"), T0)
        results = await asyncio.gather(
            *(
                store.transact(
                    call.tenant_id,
                    call.service_call_id,
                    raising if call is poisoned else cancel,
                    event_id=f"{call.service_call_id}-cancel",
                )
                for call in calls
            ),
            return_exceptions=True,
        )
        for call, result in zip(calls, results, strict=True):
            if call is poisoned:
                assert isinstance(result, ValueError)
                assert isinstance(await store.get(call.tenant_id, call.service_call_id), Scheduled)
            else:
                assert isinstance(result, Transition) and isinstance(result.state, Canceled)
        # Not marked applied: the same fact, once it can be applied, still is.
        retried = await store.transact(
            poisoned.tenant_id,
            poisoned.service_call_id,
            cancel,
            event_id=f"{poisoned.service_call_id}-cancel",
        )
        assert retried is not None and isinstance(retried.state, Canceled)

    async def test_submits_together_get_the_answers_lone_submits_would(
        self, store: ServiceCallStore
    ) -> None:
        """Submits (`new_call=True`) may be written together in one transaction (the Postgres
        store does: group commit). Each still gets what it would get alone: new calls are
        created, a second submit of one id sees the first (same request: AlreadySubmitted;
        another request: IdempotencyConflict), an existing call is not overwritten, and a
        step that raises fails alone."""
        tenant = new_tenant()
        existing = spec(tenant, tags=frozenset({"old"}))
        await store.transact(
            tenant, existing.service_call_id, submit_step(existing, T0 + timedelta(hours=2))
        )
        fresh = [spec(tenant, tags=frozenset({"x", f"n{n}"})) for n in range(12)]
        twin = fresh[0]
        rival = replace(
            spec(tenant, url="https://example.test/other"), service_call_id=fresh[1].service_call_id
        )
        poisoned = spec(tenant)

        def raising(_state):  # type: ignore[no-untyped-def]
            raise ValueError("this submit cannot be applied")

        due = T0 + timedelta(hours=1)
        items = [
            *((c, submit_step(c, due)) for c in fresh),
            (twin, submit_step(twin, due)),
            (rival, submit_step(rival, due)),
            (existing, submit_step(existing, due)),
            (poisoned, raising),
        ]
        results = await asyncio.gather(
            *(store.transact(tenant, c.service_call_id, s, new_call=True) for c, s in items),
            return_exceptions=True,
        )
        by_item = dict(zip(range(len(items)), results, strict=True))
        created = [by_item[n] for n in range(len(fresh))]
        twin_result, rival_result, existing_result, poisoned_result = list(by_item.values())[-4:]
        for call, result in zip(fresh, created, strict=True):
            assert isinstance(result, Transition) and isinstance(result.state, Scheduled)
            assert result.events and result.rejection is None
            assert await store.get(tenant, call.service_call_id) == result.state
        assert isinstance(twin_result, Transition) and not twin_result.events
        assert isinstance(twin_result.rejection, AlreadySubmitted)
        assert isinstance(rival_result, Transition)
        assert isinstance(rival_result.rejection, IdempotencyConflict)
        assert isinstance(existing_result, Transition)
        assert isinstance(existing_result.rejection, AlreadySubmitted)
        stored = await store.get(tenant, existing.service_call_id)
        assert isinstance(stored, Scheduled) and stored.due_at == T0 + timedelta(hours=2)
        assert isinstance(poisoned_result, ValueError)
        assert await store.get(tenant, poisoned.service_call_id) is None
        # The tags of calls created together are listable like any others.
        page = await store.list(ListQuery(tenant, page_size=100, tags=frozenset({"x"})))
        assert {s.spec.service_call_id for s in page.items} == {c.service_call_id for c in fresh}
        (one,) = (await store.list(ListQuery(tenant, page_size=100, tags=frozenset({"n3"})))).items
        assert one.spec.service_call_id == fresh[3].service_call_id

    async def test_a_submit_keeps_its_messages_with_the_new_call(
        self, store: ServiceCallStore
    ) -> None:
        call = spec(new_tenant())
        message = OutgoingMessage("t", f"{call.tenant_id}/{call.service_call_id}", b"x")

        def with_message(state):  # type: ignore[no-untyped-def]
            t = submit_step(call, T0 + timedelta(hours=1))(state)
            return Transition(t.state, t.events, (message,))

        transition = await store.transact(
            call.tenant_id, call.service_call_id, with_message, new_call=True
        )
        assert transition is not None and transition.messages == (message,)
        assert await store.get(call.tenant_id, call.service_call_id) == transition.state

    async def test_messages_are_kept_with_the_change(self, store: ServiceCallStore) -> None:
        call = spec(new_tenant())
        message = OutgoingMessage("t", f"{call.tenant_id}/{call.service_call_id}", b"x")

        def with_message(state):  # type: ignore[no-untyped-def]
            t = submit_step(call, T0 + timedelta(hours=1))(state)
            return Transition(t.state, t.events, (message,))

        transition = await store.transact(call.tenant_id, call.service_call_id, with_message)
        assert transition is not None and transition.messages == (message,)

    async def test_list_filters_and_pages(self, store: ServiceCallStore) -> None:
        tenant = new_tenant()
        other = new_tenant()
        calls = [
            spec(
                tenant,
                created_at=T0 + timedelta(seconds=i),
                tags=frozenset({"even"} if i % 2 == 0 else {"odd"}) | {"all"},
            )
            for i in range(7)
        ]
        for i, call in enumerate(calls):
            await store.transact(
                tenant, call.service_call_id, submit_step(call, T0 + timedelta(hours=1, seconds=-i))
            )
        stranger = spec(other, tags=frozenset({"all"}))
        await store.transact(
            other, stranger.service_call_id, submit_step(stranger, T0 + timedelta(hours=1))
        )
        await store.transact(
            tenant, calls[0].service_call_id, step_for(CancelServiceCall(reason="x"), T0)
        )

        everything = await store.list(ListQuery(tenant_id=tenant, page_size=100))
        assert [s.spec.service_call_id for s in everything.items] == [
            c.service_call_id for c in calls
        ]
        assert everything.next_cursor is None

        even = await store.list(
            ListQuery(tenant_id=tenant, page_size=100, tags=frozenset({"even", "all"}))
        )
        assert {s.spec.service_call_id for s in even.items} == {
            c.service_call_id for c in calls[::2]
        }

        canceled = await store.list(
            ListQuery(tenant_id=tenant, page_size=100, statuses=frozenset({Status.CANCELED}))
        )
        assert [s.spec.service_call_id for s in canceled.items] == [calls[0].service_call_id]

        window = await store.list(
            ListQuery(
                tenant_id=tenant,
                page_size=100,
                created_from=T0 + timedelta(seconds=2),
                created_before=T0 + timedelta(seconds=4),
            )
        )
        assert [s.spec.service_call_id for s in window.items] == [
            c.service_call_id for c in calls[2:4]
        ]

        for descending in (False, True):
            seen: list[str] = []
            query = ListQuery(
                tenant_id=tenant,
                page_size=3,
                order_by="schedule_time",
                descending=descending,
                statuses=frozenset({Status.SCHEDULED}),
            )
            while True:
                page = await store.list(query)
                seen.extend(s.spec.service_call_id for s in page.items)
                if page.next_cursor is None:
                    break
                query = replace(query, after=page.next_cursor)
            expected = [
                c.service_call_id for c in reversed(calls[1:])
            ]  # later created = earlier due
            assert seen == (list(reversed(expected)) if descending else expected)

    async def test_tag_filtered_pages_cover_each_match_once_in_creation_order(
        self, store: ServiceCallStore
    ) -> None:
        tenant = new_tenant()
        calls = [
            spec(tenant, created_at=T0 + timedelta(seconds=i), tags=frozenset({"a", f"m{i % 3}"}))
            for i in range(8)
        ]
        for call in calls:
            await store.transact(
                tenant, call.service_call_id, submit_step(call, T0 + timedelta(hours=1))
            )
        for tags, expected in ((frozenset({"a"}), calls), (frozenset({"a", "m1"}), calls[1::3])):
            for descending in (False, True):
                seen: list[str] = []
                query = ListQuery(tenant_id=tenant, page_size=2, tags=tags, descending=descending)
                while True:
                    page = await store.list(query)
                    seen.extend(s.spec.service_call_id for s in page.items)
                    if page.next_cursor is None:
                        break
                    query = replace(query, after=page.next_cursor)
                ids = [c.service_call_id for c in expected]
                assert seen == (ids[::-1] if descending else ids), (tags, descending)
        nothing = await store.list(ListQuery(tenant_id=tenant, page_size=5, tags=frozenset({"zz"})))
        assert list(nothing.items) == [] and nothing.next_cursor is None

    async def test_overdue_watchdogs_are_calls_past_their_lease_or_deadline(
        self, store: ServiceCallStore
    ) -> None:
        tenant = new_tenant()
        lost, running, finished, later = (spec(tenant) for _ in range(4))
        for call in (lost, running, finished):
            await store.transact(tenant, call.service_call_id, submit_step(call, T0))
        await store.transact(
            tenant, later.service_call_id, submit_step(later, T0 + timedelta(hours=1))
        )
        started = RecordExecutionStarted(attempt=1, started_at=T0 + timedelta(seconds=1))
        for call in (running, finished):
            await store.transact(tenant, call.service_call_id, step_for(started, T0))
        ok = ExecutionResult(200, "{}", "", False, None, T0 + timedelta(seconds=2))
        await store.transact(
            tenant,
            finished.service_call_id,
            step_for(RecordExecutionSucceeded(attempt=1, result=ok), T0),
        )
        dispatched = await store.get(tenant, lost.service_call_id)
        in_flight = await store.get(tenant, running.service_call_id)
        assert isinstance(dispatched, Dispatched) and isinstance(in_flight, Running)
        lease = dispatched.lease_expires_at
        assert lease == T0 + DEFAULT_TIMING.dispatch_lease
        assert in_flight.deadline > lease

        async def overdue(now: datetime, limit: int = 10) -> list[str]:
            return [s.spec.service_call_id for s in await store.overdue_watchdogs(now, limit)]

        tick = timedelta(microseconds=1)
        assert await overdue(lease - tick) == []
        assert await overdue(lease) == [lost.service_call_id]
        assert await overdue(in_flight.deadline) == [
            lost.service_call_id,
            running.service_call_id,
        ]
        assert await overdue(T0 + timedelta(days=1), limit=1) == [lost.service_call_id]
        assert await store.overdue_watchdogs(lease, 10) == [dispatched]

    async def test_a_basic_list_leaves_out_bodies_and_snippets(
        self, store: ServiceCallStore
    ) -> None:
        # Regression (issue #12, 8): a BASIC page carried every call's whole state, bodies of
        # up to 1 MiB included. A failed attempt gives the call a response snippet too.
        tenant = new_tenant()
        call = spec(tenant)
        call = replace(call, request=replace(call.request, body=b"x" * MIB))
        await store.transact(tenant, call.service_call_id, submit_step(call, T0))
        started = RecordExecutionStarted(attempt=1, started_at=T0)
        await store.transact(tenant, call.service_call_id, step_for(started, T0))
        failed = ExecutionResult(503, '{"error": "busy"}', "", True, None, T0)
        await store.transact(
            tenant,
            call.service_call_id,
            step_for(RecordExecutionFailed(attempt=1, result=failed), T0),
        )
        stored = await store.get(tenant, call.service_call_id)
        assert stored is not None and len(stored.spec.request.body) == MIB
        assert [a.response_snippet for a in stored.attempts] == ['{"error": "busy"}']

        (full,) = (await store.list(ListQuery(tenant_id=tenant, page_size=10))).items
        assert full == stored
        (basic,) = (await store.list(ListQuery(tenant_id=tenant, page_size=10, full=False))).items
        assert basic.spec.request.body == b""
        assert [a.response_snippet for a in basic.attempts] == [""]
        # Everything else is the stored state: what the BASIC view shows comes out the same.
        unshown = replace(stored.spec, request=replace(stored.spec.request, body=b""))
        assert basic.spec == unshown
        assert replace(basic, spec=stored.spec, attempts=stored.attempts) == stored
        assert [replace(a, response_snippet="") for a in stored.attempts] == list(basic.attempts)
