"""Facts the core decided, in log order; each carries `at`, the time of the decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.domain.commands import TimerPurpose
from orchestrator.domain.model import AttemptOutcome, ExecutionResult, ServiceCallSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Submitted:
    at: datetime
    spec: ServiceCallSpec
    due_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerRequested:
    # An instruction for the scheduler, kept in the log so the outbox publishes it with the
    # state change that asked for it.
    at: datetime
    purpose: TimerPurpose
    attempt: int
    fire_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionRequested:
    at: datetime
    attempt: int
    # Always the due_at of the call: the executor must not send before it.
    not_before: datetime
    lease_expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionStarted:
    at: datetime
    attempt: int
    started_at: datetime
    deadline: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionSucceeded:
    at: datetime
    attempt: int
    result: ExecutionResult


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionFailed:
    at: datetime
    attempt: int
    result: ExecutionResult
    outcome: AttemptOutcome
    # None: no retry, the call is Failed.
    retry_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Canceled:
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rescheduled:
    at: datetime
    due_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Abandoned:
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TooLate:
    # The mesh came to send `attempt` more than the call's max_lateness after its due time (a
    # late hand-off, or a re-dispatch after a lost one): the call fails without sending it.
    at: datetime
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    # The call's hand-off came while its queue gates it (paused, rate or concurrency limited,
    # or an ordering key): it stays Scheduled, with no timer, until the queue dispatcher
    # releases it. Also the dispatcher's new reason for a call already held.
    at: datetime
    attempt: int
    reason: str


Event = (
    Submitted
    | TimerRequested
    | ExecutionRequested
    | ExecutionStarted
    | ExecutionSucceeded
    | ExecutionFailed
    | Canceled
    | Rescheduled
    | Abandoned
    | TooLate
    | Held
)
