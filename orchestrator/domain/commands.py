"""Inputs to the ServiceCall core: client intents, fired timers and executor reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

from orchestrator.domain.model import ExecutionResult, ServiceCallSpec


class TimerPurpose(enum.Enum):
    # due_at − lead reached: hand the call to the executor.
    HANDOFF = "HANDOFF"
    # Lease of a hand-off ran out: check that the executor picked the call up.
    DISPATCH_LEASE = "DISPATCH_LEASE"
    # Watchdog of a running attempt.
    ATTEMPT_DEADLINE = "ATTEMPT_DEADLINE"


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitServiceCall:
    spec: ServiceCallSpec
    due_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class FireTimer:
    # A durable timer fired (DueTimeReached). fire_at tells which arming it was, so a timer
    # armed for an older due_at can be told apart from the current one.
    purpose: TimerPurpose
    attempt: int
    fire_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordExecutionStarted:
    attempt: int
    started_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordExecutionSucceeded:
    attempt: int
    result: ExecutionResult


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordExecutionFailed:
    attempt: int
    result: ExecutionResult


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelServiceCall:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RescheduleServiceCall:
    due_at: datetime
    # Optimistic concurrency for clients: None means "whatever the current version is".
    expected_version: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunServiceCallNow:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class AbandonServiceCall:
    # The mesh cannot carry the call any further (a fact about it could not be applied, or
    # its execution request was refused by the broker): it fails with this reason rather than
    # staying non-terminal forever. Never a client's command.
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseServiceCall:
    # The queue dispatcher (orchestrator/service_layer/queues.py) lets a held call go: it is
    # handed off to be sent at `send_at` (its place in the queue's rate) or its due time,
    # whichever is later. `attempt` names the held attempt, so a release decided on an older
    # look at the call is refused. Never a client's command.
    attempt: int
    send_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldServiceCall:
    # The queue dispatcher's new word on why a held call still waits (a queue paused after
    # it was held, the call of its ordering key it waits for). Never a client's command.
    attempt: int
    reason: str


Command = (
    SubmitServiceCall
    | FireTimer
    | RecordExecutionStarted
    | RecordExecutionSucceeded
    | RecordExecutionFailed
    | CancelServiceCall
    | RescheduleServiceCall
    | RunServiceCallNow
    | AbandonServiceCall
    | ReleaseServiceCall
    | HoldServiceCall
)


# Commands as the transition table sees them: each timer purpose moves the call differently.
class CommandKind(enum.Enum):
    SUBMIT = "SUBMIT"
    HANDOFF_TIMER = "HANDOFF_TIMER"
    DISPATCH_LEASE_TIMER = "DISPATCH_LEASE_TIMER"
    ATTEMPT_DEADLINE_TIMER = "ATTEMPT_DEADLINE_TIMER"
    EXECUTION_STARTED = "EXECUTION_STARTED"
    EXECUTION_SUCCEEDED = "EXECUTION_SUCCEEDED"
    EXECUTION_FAILED = "EXECUTION_FAILED"
    CANCEL = "CANCEL"
    RESCHEDULE = "RESCHEDULE"
    RUN_NOW = "RUN_NOW"
    ABANDON = "ABANDON"
    RELEASE = "RELEASE"
    HOLD = "HOLD"


_TIMER_KINDS = {
    TimerPurpose.HANDOFF: CommandKind.HANDOFF_TIMER,
    TimerPurpose.DISPATCH_LEASE: CommandKind.DISPATCH_LEASE_TIMER,
    TimerPurpose.ATTEMPT_DEADLINE: CommandKind.ATTEMPT_DEADLINE_TIMER,
}


def kind_of(command: Command) -> CommandKind:
    match command:
        case SubmitServiceCall():
            return CommandKind.SUBMIT
        case FireTimer(purpose=purpose):
            return _TIMER_KINDS[purpose]
        case RecordExecutionStarted():
            return CommandKind.EXECUTION_STARTED
        case RecordExecutionSucceeded():
            return CommandKind.EXECUTION_SUCCEEDED
        case RecordExecutionFailed():
            return CommandKind.EXECUTION_FAILED
        case CancelServiceCall():
            return CommandKind.CANCEL
        case RescheduleServiceCall():
            return CommandKind.RESCHEDULE
        case RunServiceCallNow():
            return CommandKind.RUN_NOW
        case AbandonServiceCall():
            return CommandKind.ABANDON
        case ReleaseServiceCall():
            return CommandKind.RELEASE
        case HoldServiceCall():
            return CommandKind.HOLD
        case _:
            assert_never(command)
