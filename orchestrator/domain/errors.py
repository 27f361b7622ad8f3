"""Expected rejections of the core, as values; `kind` tells the shell how to surface each one."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from orchestrator.domain.commands import CommandKind, TimerPurpose
from orchestrator.domain.states import ServiceCallState, Status


class ErrorKind(enum.Enum):
    # The API maps these to gRPC codes in one place; the core must not know gRPC.
    INVALID = "INVALID"  # INVALID_ARGUMENT
    NOT_FOUND = "NOT_FOUND"  # NOT_FOUND
    CONFLICT = "CONFLICT"  # ALREADY_EXISTS (idempotency) / ABORTED (version)
    PRECONDITION = "PRECONDITION"  # FAILED_PRECONDITION
    # Nothing to do, nothing changed. For a submission: return the existing call; for
    # timers and executor reports: acknowledge and ignore.
    DUPLICATE = "DUPLICATE"
    # Out of date (an older attempt, a disarmed timer): acknowledge, log and ignore.
    STALE = "STALE"


@dataclass(frozen=True, slots=True)
class ServiceCallNotFound:
    kind: ClassVar[ErrorKind] = ErrorKind.NOT_FOUND
    command: CommandKind

    @property
    def message(self) -> str:
        return f"service call not found ({self.command.value})"


@dataclass(frozen=True, slots=True)
class AlreadySubmitted:
    # Same idempotency key, same request: not a failure, the shell answers with `state`.
    kind: ClassVar[ErrorKind] = ErrorKind.DUPLICATE
    state: ServiceCallState

    @property
    def message(self) -> str:
        return f"service call {self.state.spec.service_call_id} already exists with this request"


@dataclass(frozen=True, slots=True)
class IdempotencyConflict:
    kind: ClassVar[ErrorKind] = ErrorKind.CONFLICT
    service_call_id: str
    idempotency_key: str | None

    @property
    def message(self) -> str:
        return (
            f"idempotency key {self.idempotency_key!r} was already used for a different "
            f"request (service call {self.service_call_id})"
        )


@dataclass(frozen=True, slots=True)
class VersionMismatch:
    kind: ClassVar[ErrorKind] = ErrorKind.CONFLICT
    expected: int
    actual: int

    @property
    def message(self) -> str:
        return f"expected version {self.expected} but the service call is at {self.actual}"


@dataclass(frozen=True, slots=True)
class AlreadyTerminal:
    kind: ClassVar[ErrorKind] = ErrorKind.PRECONDITION
    status: Status

    @property
    def message(self) -> str:
        return f"service call is already {self.status.value}"


@dataclass(frozen=True, slots=True)
class NotCancelable:
    kind: ClassVar[ErrorKind] = ErrorKind.PRECONDITION
    status: Status

    @property
    def message(self) -> str:
        return (
            f"service call is {self.status.value}: it was handed to the executor and can "
            "no longer be canceled"
        )


@dataclass(frozen=True, slots=True)
class NotReschedulable:
    kind: ClassVar[ErrorKind] = ErrorKind.PRECONDITION
    status: Status

    @property
    def message(self) -> str:
        return f"service call is {self.status.value}: only a SCHEDULED call can be rescheduled"


@dataclass(frozen=True, slots=True)
class NotReplayable:
    # A replay is a new call made from a finished one; replaying a call still under way
    # would let two calls send the same request at once.
    kind: ClassVar[ErrorKind] = ErrorKind.PRECONDITION
    status: Status

    @property
    def message(self) -> str:
        return (
            f"service call is {self.status.value}: only a SUCCEEDED, FAILED or CANCELED call "
            "can be replayed"
        )


@dataclass(frozen=True, slots=True)
class IllegalTransition:
    # An executor report the current state cannot have caused (e.g. a result for an
    # attempt that was never handed off). Never produced by a correct mesh.
    kind: ClassVar[ErrorKind] = ErrorKind.PRECONDITION
    status: Status
    command: CommandKind
    attempt: int

    @property
    def message(self) -> str:
        return f"{self.command.value} for attempt {self.attempt} is illegal in {self.status.value}"


@dataclass(frozen=True, slots=True)
class UnknownQueue:
    # A submit names a queue its tenant does not have (`default` always exists).
    kind: ClassVar[ErrorKind] = ErrorKind.NOT_FOUND
    tenant_id: str
    queue_id: str

    @property
    def message(self) -> str:
        return f"queue tenants/{self.tenant_id}/queues/{self.queue_id} not found"


@dataclass(frozen=True, slots=True)
class NotHeld:
    # A release or hold decided on an older look at the call: it was canceled, rescheduled,
    # released by another dispatcher, or has moved to another attempt meanwhile.
    kind: ClassVar[ErrorKind] = ErrorKind.STALE
    status: Status
    attempt: int

    @property
    def message(self) -> str:
        return f"attempt {self.attempt} is not held (the call is {self.status.value})"


@dataclass(frozen=True, slots=True)
class StaleTimer:
    kind: ClassVar[ErrorKind] = ErrorKind.STALE
    purpose: TimerPurpose
    attempt: int
    fire_at: datetime

    @property
    def message(self) -> str:
        return (
            f"{self.purpose.value} timer for attempt {self.attempt} at "
            f"{self.fire_at.isoformat()} is no longer armed"
        )


@dataclass(frozen=True, slots=True)
class StaleEvent:
    kind: ClassVar[ErrorKind] = ErrorKind.STALE
    command: CommandKind
    attempt: int
    current_attempt: int

    @property
    def message(self) -> str:
        return (
            f"{self.command.value} for attempt {self.attempt} arrived after attempt "
            f"{self.current_attempt} began"
        )


@dataclass(frozen=True, slots=True)
class Duplicate:
    kind: ClassVar[ErrorKind] = ErrorKind.DUPLICATE
    command: CommandKind
    attempt: int

    @property
    def message(self) -> str:
        return f"{self.command.value} for attempt {self.attempt} was already applied"


@dataclass(frozen=True, slots=True)
class StartedTooEarly:
    # The executor broke "never before due_at". Refused so the record never shows it as
    # normal; the shell must alert, as the request may already have reached the target.
    kind: ClassVar[ErrorKind] = ErrorKind.INVALID
    attempt: int
    started_at: datetime
    due_at: datetime

    @property
    def message(self) -> str:
        return (
            f"attempt {self.attempt} reported a start at {self.started_at.isoformat()}, "
            f"before due_at {self.due_at.isoformat()}"
        )


DomainError = (
    ServiceCallNotFound
    | AlreadySubmitted
    | IdempotencyConflict
    | VersionMismatch
    | AlreadyTerminal
    | NotCancelable
    | NotReschedulable
    | NotReplayable
    | IllegalTransition
    | StaleTimer
    | NotHeld
    | UnknownQueue
    | StaleEvent
    | Duplicate
    | StartedTooEarly
)
