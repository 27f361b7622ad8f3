"""watchdog_timer/watchdog_due: which timer guards a state, when, in the form the core accepts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.domain.commands import FireTimer, TimerPurpose
from orchestrator.domain.decide import decide, evolve, watchdog_due, watchdog_timer
from orchestrator.domain.errors import StaleTimer
from orchestrator.domain.states import (
    Dispatched,
    Running,
    Scheduled,
    ServiceCallState,
    Status,
    status_of,
)

from .builders import TIMING, dispatched, running, state_in

BACKSTOP = timedelta(seconds=30)


def test_a_dispatched_call_is_guarded_by_its_lease() -> None:
    state = dispatched()
    assert watchdog_timer(state) == FireTimer(
        purpose=TimerPurpose.DISPATCH_LEASE, attempt=state.attempt, fire_at=state.lease_expires_at
    )


def test_a_running_call_is_guarded_by_its_deadline() -> None:
    state = running()
    assert watchdog_timer(state) == FireTimer(
        purpose=TimerPurpose.ATTEMPT_DEADLINE, attempt=state.attempt, fire_at=state.deadline
    )


def test_a_scheduled_call_is_guarded_by_its_hand_off() -> None:
    # Regression (issue #12, 10): a Scheduled call had no backstop for a lost hand-off timer.
    state = state_in(Status.SCHEDULED)
    assert isinstance(state, Scheduled) and state.handoff_at is not None
    assert watchdog_timer(state) == FireTimer(
        purpose=TimerPurpose.HANDOFF, attempt=state.attempt, fire_at=state.handoff_at
    )


def test_the_hand_off_backstop_waits_for_the_scheduler_and_the_others_do_not() -> None:
    scheduled = state_in(Status.SCHEDULED)
    assert isinstance(scheduled, Scheduled) and scheduled.handoff_at is not None
    assert watchdog_due(scheduled, BACKSTOP) == scheduled.handoff_at + BACKSTOP
    leased = dispatched()
    assert watchdog_due(leased, BACKSTOP) == leased.lease_expires_at
    started = running()
    assert watchdog_due(started, BACKSTOP) == started.deadline


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELED])
def test_finished_calls_have_no_watchdog(status: Status) -> None:
    state = state_in(status)
    assert state is not None and status_of(state) is status
    assert watchdog_timer(state) is None
    assert watchdog_due(state, BACKSTOP) is None


@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.DISPATCHED, Status.RUNNING])
def test_the_core_acts_on_it_once_its_time_has_come(status: Status) -> None:
    state = state_in(status)
    assert isinstance(state, Scheduled | Dispatched | Running)
    timer = watchdog_timer(state)
    due_at = watchdog_due(state, BACKSTOP)
    assert timer is not None and due_at is not None
    events = decide(state, timer, due_at, TIMING)
    assert isinstance(events, tuple), events
    assert events and type(events[0]).__name__ in ("ExecutionRequested", "ExecutionFailed")


def test_the_second_hand_off_of_one_arming_is_refused() -> None:
    # The backstop and the scheduler's fact carry the same FireTimer: whichever comes second
    # finds the call Dispatched, so it is never handed off twice.
    state = state_in(Status.SCHEDULED)
    assert isinstance(state, Scheduled)
    timer = watchdog_timer(state)
    due_at = watchdog_due(state, BACKSTOP)
    assert timer is not None and due_at is not None
    events = decide(state, timer, due_at, TIMING)
    assert isinstance(events, tuple), events
    after: ServiceCallState = state
    for event in events:
        after = evolve(after, event)
    assert isinstance(after, Dispatched)
    assert isinstance(decide(after, timer, due_at, TIMING), StaleTimer)
    assert watchdog_timer(after) != timer
