"""watchdog_timer: which lease or deadline guards a state, in the form the core accepts."""

from __future__ import annotations

import pytest

from orchestrator.domain.commands import FireTimer, TimerPurpose
from orchestrator.domain.decide import decide, watchdog_timer
from orchestrator.domain.states import Dispatched, Running, Status, status_of

from .builders import TIMING, dispatched, running, state_in


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


@pytest.mark.parametrize(
    "status", [Status.SCHEDULED, Status.SUCCEEDED, Status.FAILED, Status.CANCELED]
)
def test_other_states_have_no_watchdog(status: Status) -> None:
    state = state_in(status)
    assert state is not None and status_of(state) is status
    assert watchdog_timer(state) is None


@pytest.mark.parametrize("status", [Status.DISPATCHED, Status.RUNNING])
def test_the_core_acts_on_it_once_its_time_has_come(status: Status) -> None:
    state = state_in(status)
    assert isinstance(state, Dispatched | Running)
    timer = watchdog_timer(state)
    assert timer is not None
    events = decide(state, timer, timer.fire_at, TIMING)
    assert isinstance(events, tuple), events
    assert events and type(events[0]).__name__ in ("ExecutionRequested", "ExecutionFailed")
