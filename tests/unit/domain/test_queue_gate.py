"""The queue gate in the core: a gated hand-off holds the call (Scheduled, held_reason, no
timer) on every path that can hand off; ReleaseServiceCall sends it no earlier than its due
time and its assigned send time; cancel, reschedule and run-now of a held call."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from orchestrator.domain import events as ev
from orchestrator.domain.commands import (
    CancelServiceCall,
    FireTimer,
    HoldServiceCall,
    RecordExecutionFailed,
    ReleaseServiceCall,
    RescheduleServiceCall,
    RunServiceCallNow,
    SubmitServiceCall,
    TimerPurpose,
)
from orchestrator.domain.decide import decide, watchdog_timer
from orchestrator.domain.errors import NotHeld
from orchestrator.domain.states import Canceled, Dispatched, Failed, Scheduled

from .builders import (
    DUE,
    SECOND,
    SPEC,
    T0,
    TIMING,
    dispatched,
    events_of,
    execution_result,
    held,
    running,
    scheduled,
    step,
)

GATE = 'held by paused queue "q"'


def test_an_ungated_hand_off_dispatches_as_before() -> None:
    before = scheduled()
    assert before.handoff_at is not None
    fire = FireTimer(purpose=TimerPurpose.HANDOFF, attempt=1, fire_at=before.handoff_at)
    assert isinstance(step(before, fire, before.handoff_at), Dispatched)


def test_a_gated_hand_off_holds_the_call_without_a_timer() -> None:
    state = held(reason=GATE)
    assert state.held_reason == GATE
    assert state.handoff_at is None
    # Nobody re-fires a held call's hand-off: the queue dispatcher is its keeper.
    assert watchdog_timer(state) is None


def test_a_gated_submit_due_now_is_held_not_dispatched() -> None:
    decision = events_of(decide(None, SubmitServiceCall(spec=SPEC, due_at=T0), T0, TIMING, GATE))
    assert [type(e) for e in decision] == [ev.Submitted, ev.Held]
    state = step(None, SubmitServiceCall(spec=SPEC, due_at=T0), T0, gate=GATE)
    assert isinstance(state, Scheduled) and state.held_reason == GATE


def test_a_gated_submit_due_later_arms_its_hand_off_timer_as_usual() -> None:
    state = step(None, SubmitServiceCall(spec=SPEC, due_at=DUE), T0, gate=GATE)
    assert isinstance(state, Scheduled)
    assert state.held_reason is None and state.handoff_at == DUE - TIMING.handoff_lead


def test_a_gated_retry_within_the_lead_is_held() -> None:
    busy = execution_result(ended_at=DUE + SECOND, status=503, retryable=True)
    state = step(running(), RecordExecutionFailed(attempt=1, result=busy), DUE + SECOND, gate=GATE)
    assert isinstance(state, Scheduled)
    assert state.attempt == 2 and state.held_reason == GATE


def test_release_sends_at_the_later_of_due_time_and_send_time() -> None:
    state = held()
    now = DUE - TIMING.handoff_lead
    early = events_of(decide(state, ReleaseServiceCall(attempt=1, send_at=now), now, TIMING))
    assert isinstance(early[0], ev.ExecutionRequested) and early[0].not_before == DUE
    later = DUE + timedelta(milliseconds=700)
    paced = events_of(decide(state, ReleaseServiceCall(attempt=1, send_at=later), now, TIMING))
    assert isinstance(paced[0], ev.ExecutionRequested) and paced[0].not_before == later
    after = step(state, ReleaseServiceCall(attempt=1, send_at=later), now)
    assert isinstance(after, Dispatched)
    assert after.due_at == DUE  # the call's due time is its own, the send time the queue's
    assert after.lease_expires_at == later + TIMING.dispatch_lease


def test_release_of_a_call_that_is_not_held_is_refused() -> None:
    now = DUE - TIMING.handoff_lead
    release = ReleaseServiceCall(attempt=1, send_at=now)
    assert isinstance(decide(scheduled(), release, now, TIMING), NotHeld)
    assert isinstance(decide(dispatched(), release, now, TIMING), NotHeld)
    stale = ReleaseServiceCall(attempt=2, send_at=now)
    assert isinstance(decide(held(), stale, now, TIMING), NotHeld)


def test_a_release_past_max_lateness_fails_the_call_unsent() -> None:
    state = replace(held(), spec=replace(SPEC, max_lateness=timedelta(seconds=5)))
    now = DUE + timedelta(minutes=1)
    after = step(state, ReleaseServiceCall(attempt=1, send_at=now), now)
    assert isinstance(after, Failed) and "max_lateness" in after.reason


def test_a_held_call_can_be_canceled() -> None:
    assert isinstance(step(held(), CancelServiceCall(reason="purged"), T0), Canceled)


def test_rescheduling_a_held_call_un_holds_it_until_its_new_hand_off() -> None:
    later = DUE + timedelta(hours=1)
    state = step(held(), RescheduleServiceCall(due_at=later), T0, gate=GATE)
    assert isinstance(state, Scheduled)
    assert state.held_reason is None and state.handoff_at == later - TIMING.handoff_lead


def test_run_now_of_a_held_call_keeps_it_held_when_gated_and_sends_it_when_not() -> None:
    state = step(held(), RunServiceCallNow(), T0, gate=GATE)
    assert isinstance(state, Scheduled) and state.held_reason == GATE and state.due_at == T0
    assert isinstance(step(held(), RunServiceCallNow(), T0), Dispatched)


def test_hold_changes_the_reason_of_a_held_call_only() -> None:
    state = step(held(), HoldServiceCall(attempt=1, reason="waiting for call x"), T0)
    assert isinstance(state, Scheduled) and state.held_reason == "waiting for call x"
    refused = decide(scheduled(), HoldServiceCall(attempt=1, reason="r"), T0, TIMING)
    assert isinstance(refused, NotHeld)


def test_a_lost_hand_off_of_a_released_call_is_sent_again_ungated() -> None:
    state = dispatched()
    fire = FireTimer(purpose=TimerPurpose.DISPATCH_LEASE, attempt=1, fire_at=state.lease_expires_at)
    decision = events_of(decide(state, fire, state.lease_expires_at, TIMING, GATE))
    assert isinstance(decision[0], ev.ExecutionRequested)
