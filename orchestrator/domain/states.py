"""The ServiceCall state: a closed union, each state holding only the fields legal in it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

from orchestrator.domain.model import Attempt, ServiceCallSpec


class Status(enum.Enum):
    SCHEDULED = "SCHEDULED"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


# Every state carries `version` (events applied so far; 1 after Submitted) and `attempts`
# (finished attempts, oldest first).


@dataclass(frozen=True, slots=True, kw_only=True)
class Scheduled:
    spec: ServiceCallSpec
    version: int
    attempts: tuple[Attempt, ...]
    due_at: datetime
    # The attempt that runs next, 1 for the first.
    attempt: int
    # Fire time of the hand-off timer currently armed. Stored rather than recomputed as
    # due_at − lead so that changing the lead in config never strands timers already armed.
    # None only between the event that schedules and the TimerRequested of the same decision,
    # and while the call is held.
    handoff_at: datetime | None
    # Set while the call is held by its queue (the hand-off came, the queue's gate did not let
    # it go): why, for people. The queue dispatcher releases it; no timer is armed meanwhile.
    held_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatched:
    spec: ServiceCallSpec
    version: int
    attempts: tuple[Attempt, ...]
    due_at: datetime
    attempt: int
    dispatched_at: datetime
    lease_expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Running:
    spec: ServiceCallSpec
    version: int
    attempts: tuple[Attempt, ...]
    due_at: datetime
    attempt: int
    started_at: datetime
    deadline: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Succeeded:
    spec: ServiceCallSpec
    version: int
    attempts: tuple[Attempt, ...]
    completed_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    spec: ServiceCallSpec
    version: int
    attempts: tuple[Attempt, ...]
    completed_at: datetime
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Canceled:
    spec: ServiceCallSpec
    version: int
    attempts: tuple[Attempt, ...]
    canceled_at: datetime
    reason: str


ServiceCallState = Scheduled | Dispatched | Running | Succeeded | Failed | Canceled
ActiveState = Scheduled | Dispatched | Running
TerminalState = Succeeded | Failed | Canceled

TERMINAL = (Succeeded, Failed, Canceled)


def status_of(state: ServiceCallState) -> Status:
    match state:
        case Scheduled():
            return Status.SCHEDULED
        case Dispatched():
            return Status.DISPATCHED
        case Running():
            return Status.RUNNING
        case Succeeded():
            return Status.SUCCEEDED
        case Failed():
            return Status.FAILED
        case Canceled():
            return Status.CANCELED
        case _:
            assert_never(state)
