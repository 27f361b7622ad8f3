"""The orchestrator's ports: where service calls are kept and how their changes commit, and
the values the use cases take and give (submissions, queries, pages, parked items, keys)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from mesh.ports import OutgoingMessage
from orchestrator.domain.api_keys import ApiKey
from orchestrator.domain.commands import Command
from orchestrator.domain.errors import DomainError
from orchestrator.domain.events import Event
from orchestrator.domain.idempotency import DueSpec
from orchestrator.domain.model import HttpRequest, ResponseRules, RetryPolicy
from orchestrator.domain.queues import KeyHistory, Queue
from orchestrator.domain.schedules import MissedOccurrencePolicy, Schedule
from orchestrator.domain.states import ServiceCallState, Status
from orchestrator.domain.validation import FieldViolation


@dataclass(frozen=True, slots=True)
class Submission:
    """One call a client asks to submit, as the API received it (not validated yet)."""

    tenant_id: str
    request: HttpRequest
    tags: frozenset[str]
    idempotency_key: str | None
    retry_policy: RetryPolicy
    due: DueSpec | None  # None: now
    # Set only by the replay use case (Orchestrator.replay): the id of the terminal call this
    # one is made from. The API's own submissions never carry it.
    replay_of: str | None = None
    callback_url: str | None = None
    failure_callback_url: str | None = None
    max_lateness: timedelta | None = None
    # Set only by the mesh's own use cases, never by the API: the call a completion callback
    # reports on, and the schedule an occurrence belongs to (ServiceCallSpec).
    callback_of: str | None = None
    schedule_id: str | None = None
    response_rules: ResponseRules | None = None
    queue_id: str | None = None
    ordering_key: str | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    """A client's ask to replay a terminal call (ReplayServiceCall), not validated yet."""

    tenant_id: str
    service_call_id: str  # the call to replay
    idempotency_key: str | None
    due: DueSpec | None  # None: now


@dataclass(frozen=True, slots=True)
class Invalid:
    violations: tuple[FieldViolation, ...]


@dataclass(frozen=True, slots=True)
class Accepted:
    state: ServiceCallState
    created: bool


class SubmitObserver(Protocol):
    """Sees every submit's answer (the metrics adapter counts them)."""

    def observe_submit(self, outcome: Accepted | Invalid | DomainError) -> None: ...

    def observe_submit_error(self) -> None:
        """A submit raised (an outage) instead of answering."""
        ...


@dataclass(frozen=True, slots=True)
class IncomingFact:
    """A fact another service reports about a call (a fired timer, an execution's progress),
    decoded from its Kafka envelope: what to apply, to which call, once per `event_id`."""

    tenant_id: str
    service_call_id: str
    event_id: str
    correlation_id: str
    command: Command
    payload: str  # the envelope's payload kind, for the log line


@dataclass(frozen=True, slots=True)
class Completion:
    """A call reached a terminal state: its `completed` summary on the call events topic,
    decoded (the completion-callback consumer's input)."""

    tenant_id: str
    service_call_id: str
    event_id: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class Transition:
    """What one decision did: the state after it, the events applied, the messages to send.

    A rejected decision carries `rejection` and no events; the store then writes nothing but
    the inbox mark (so a redelivered, rejected event stays rejected without a second look).
    """

    state: ServiceCallState | None
    events: tuple[Event, ...] = ()
    messages: tuple[OutgoingMessage, ...] = ()
    rejection: DomainError | None = None


Step = Callable[[ServiceCallState | None], Transition]

# The messages a committed decision sends (before, after, events, correlation id): the
# envelopes built by orchestrator/mapping.py `outbox_messages`, wired in by main.py.
OutboxMessages = Callable[
    [ServiceCallState | None, ServiceCallState, Sequence[Event], str], tuple[OutgoingMessage, ...]
]

OrderBy = Literal["create_time", "schedule_time"]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Keyset position: the sort value and id of the last row of the previous page."""

    sort_value: datetime
    service_call_id: str


@dataclass(frozen=True, slots=True)
class ListQuery:
    tenant_id: str
    page_size: int
    statuses: frozenset[Status] = frozenset()
    tags: frozenset[str] = frozenset()
    created_from: datetime | None = None
    created_before: datetime | None = None
    due_from: datetime | None = None
    due_before: datetime | None = None
    order_by: OrderBy = "create_time"
    descending: bool = False
    after: Cursor | None = None
    # False: the items are for the BASIC view, which shows neither the request body nor the
    # attempts' response snippets; the store may leave those empty and not read them.
    full: bool = True


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[ServiceCallState]
    next_cursor: Cursor | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A committed message waiting to be published; `id` orders rows by insertion."""

    id: int
    message: OutgoingMessage


class Outbox(Protocol):
    """The relay's side of the outbox: what is still to publish, and marking it done."""

    async def pending(self, limit: int) -> list[OutboxRow]:
        """Unpublished rows, lowest id first (never "ids after the last one seen")."""
        ...

    async def mark_published(self, ids: list[int]) -> None: ...

    async def prune(self, older_than: timedelta) -> int:
        """Deletes rows published more than `older_than` ago; never an unpublished one."""
        ...


class ConcurrentUpdateError(Exception):
    """The row changed under us (a guard failed); the caller retries the whole step."""


class ServiceCallStore(Protocol):
    async def get(self, tenant_id: str, service_call_id: str) -> ServiceCallState | None: ...

    async def list(self, query: ListQuery) -> Page: ...

    async def transact(
        self,
        tenant_id: str,
        service_call_id: str,
        step: Step,
        event_id: str | None = None,
        *,
        new_call: bool = False,
    ) -> Transition | None:
        """Runs `step` on the current state and commits its outcome, its outbox messages and
        the inbox mark for `event_id` in ONE transaction. Returns None, without calling
        `step`, when `event_id` was already applied.

        `new_call` is a hint from a submit: the call most likely does not exist yet. The
        store may then run `step` on no state first and write it together with other
        concurrent submits (group commit); whatever it does, the result is what `step` gives
        on the state the call really had, and nothing returns before its commit."""
        ...

    async def overdue_watchdogs(self, now: datetime, limit: int) -> Sequence[ServiceCallState]:
        """Calls whose watchdog timer (`decide.watchdog_timer`) is due (`decide.watchdog_due`,
        with the store's hand-off backstop) at or before `now`, earliest first, at most
        `limit`. A plain read: a call may move on before the caller
        acts on it, which the core's guards against stale timers are for."""
        ...


@dataclass(frozen=True, slots=True)
class ParkedItem:
    """What was parked: a Kafka message (partition and offset set) or an outbox row."""

    topic: str
    key: str
    payload: bytes
    error: str
    source: str
    tenant_id: str | None = None
    service_call_id: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None
    outbox_id: int | None = None


@dataclass(frozen=True, slots=True)
class ParkedRow:
    id: int
    item: ParkedItem
    parked_at: datetime
    replayed_at: datetime | None


class ParkingLot(Protocol):
    async def park(self, item: ParkedItem) -> int:
        """Keeps the item; returns its parked id."""
        ...


class ParkedMessages(Protocol):
    """The operator's side of the parking lot (`python -m orchestrator admin parked`)."""

    def list(self, include_replayed: bool = False, limit: int = 100) -> list[ParkedRow]: ...

    def replay(self, parked_id: int) -> bool:
        """Publishes a parked message again (through the outbox); False if it is unknown or
        was already replayed."""
        ...


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_id: str
    tenant_id: str
    secret_hash: bytes
    revoked: bool


class KeyLookup(Protocol):
    async def find(self, key_id: str) -> StoredKey | None: ...


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    tenant_id: str
    created_at: datetime
    revoked_at: datetime | None


class Tenants(Protocol):
    """Tenants and their API keys, the admin side (`python -m orchestrator admin`)."""

    def create_tenant(self, tenant_id: str) -> bool:
        """False when the tenant already exists."""
        ...

    def create_key(self, tenant_id: str) -> ApiKey: ...

    def revoke_key(self, key_id: str) -> bool:
        """False when the key is unknown or already revoked."""
        ...

    def list_keys(self, tenant_id: str) -> list[KeyInfo]: ...


# Schedules (#17, ScheduleService): a recurrence and the call made at each of its occurrences
# (orchestrator/domain/schedules.py); kept by a ScheduleStore, made by the materialiser
# (orchestrator/service_layer/schedules.py).

# The fields UpdateSchedule may change (its update_mask paths); an empty mask means all.
SCHEDULE_FIELDS = frozenset(
    {
        "cron",
        "time_zone",
        "start_time",
        "end_time",
        "call_template",
        "missed_occurrence_policy",
        "description",
    }
)


def template_field(field: str) -> str:
    """The API path of a call template's field, from its path in a submit
    (`service_call.request.url` -> `schedule.call_template.request.url`)."""
    if field == "service_call" or field.startswith("service_call."):
        return "schedule.call_template" + field.removeprefix("service_call")
    return field


@dataclass(frozen=True, slots=True)
class ScheduleDraft:
    """A schedule's definition as the API received it, not validated yet: all of it on create,
    on update only the fields named in the mask are read (the others keep their defaults).

    `template` is the call template mapped as a submit's call (orchestrator/mapping.py), its
    idempotency key and due time left out; None when the request had none."""

    tenant_id: str
    schedule_id: str  # "" on create: the mesh gives it a UUIDv7
    cron: str = ""
    time_zone: str = ""
    start_at: datetime | None = None
    end_at: datetime | None = None
    template: Submission | None = None
    missed_policy: MissedOccurrencePolicy = MissedOccurrencePolicy.FIRE_LATEST
    description: str = ""


@dataclass(frozen=True, slots=True)
class ScheduleNotFound:
    tenant_id: str
    schedule_id: str

    @property
    def message(self) -> str:
        return f"schedule tenants/{self.tenant_id}/schedules/{self.schedule_id} not found"


@dataclass(frozen=True, slots=True)
class ScheduleExists:
    tenant_id: str
    schedule_id: str

    @property
    def message(self) -> str:
        return f"schedule tenants/{self.tenant_id}/schedules/{self.schedule_id} already exists"


@dataclass(frozen=True, slots=True)
class ScheduleVersionMismatch:
    expected: int
    actual: int

    @property
    def message(self) -> str:
        return f"expected version {self.expected} but the schedule is at {self.actual}"


@dataclass(frozen=True, slots=True)
class ScheduleEnded:
    @property
    def message(self) -> str:
        return "the schedule has ended (no occurrence is left): update its end_time instead"


ScheduleRefusal = ScheduleNotFound | ScheduleExists | ScheduleVersionMismatch | ScheduleEnded

# A change of one schedule, decided on its current value: the new value to write (the same
# value: nothing to write), or why not.
ScheduleStep = Callable[[Schedule], Schedule | ScheduleRefusal | Invalid]

# What the materialiser does with one claimed schedule: makes its due occurrences' calls and
# gives the schedule moved on (its next and last occurrence, its state).
Advance = Callable[[Schedule], Awaitable[Schedule]]


@dataclass(frozen=True, slots=True)
class SchedulePage:
    items: Sequence[Schedule]
    # The last schedule id of this page when more follow (the next page starts after it).
    next_after: str | None


class ScheduleStore(Protocol):
    async def create(self, schedule: Schedule) -> bool:
        """Stores a new schedule; False (nothing written) when its id is taken in its tenant."""
        ...

    async def get(self, tenant_id: str, schedule_id: str) -> Schedule | None: ...

    async def list(self, tenant_id: str, page_size: int, after: str | None) -> SchedulePage:
        """The tenant's schedules by schedule id, from the first one after `after`."""
        ...

    async def change(
        self, tenant_id: str, schedule_id: str, step: ScheduleStep
    ) -> Schedule | ScheduleRefusal | Invalid:
        """Runs `step` on the schedule as it is, holding it (a claim of the materialiser
        waits, and is waited for), and writes the schedule it gives unless that equals the
        current one. ScheduleNotFound, without calling `step`, when there is none."""
        ...

    async def delete(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        """Deletes the schedule (waiting for a claim that holds it); the schedule as it was,
        or None when there was none."""
        ...

    async def claim_due(self, until: datetime, limit: int, advance: Advance) -> int:
        """Claims the ACTIVE schedules whose next occurrence is at or before `until` and that
        nobody else holds (earliest first, at most `limit`), awaits `advance` for each
        (concurrently) and writes the next and last occurrence and the state it gives (its
        other fields are not written), all in ONE transaction: if an `advance` raises,
        nothing is written. Returns how many schedules were claimed."""
        ...


class OccurrenceObserver(Protocol):
    """Sees what each materialiser pass did (the metrics adapter counts it)."""

    def observe_occurrences(self, made: int, missed: int, skipped: int) -> None: ...


# Queues (#18, QueueService): delivery control per queue (orchestrator/domain/queues.py); kept
# by a QueueStore, seen by every use case through QueueConfigs, held calls released by the
# queue dispatcher (orchestrator/service_layer/queues.py).


class QueueConfigs(Protocol):
    """The queues as this process last saw them (a view refreshed from the store every
    `interval`, and at once after a change made here). Read on every decision: the gate of a
    call (domain/queues.queue_gate) and whether a submit's queue exists."""

    @property
    def interval(self) -> timedelta:
        """How stale the view may be: every process has seen a change this long after it."""
        ...

    def get(self, tenant_id: str, queue_id: str) -> Queue | None:
        """The queue's row as last seen; None when it has none (`default` never changed, or
        no such queue)."""
        ...

    async def refresh(self) -> None: ...


@dataclass(frozen=True, slots=True)
class QueueNotFound:
    tenant_id: str
    queue_id: str

    @property
    def message(self) -> str:
        return f"queue tenants/{self.tenant_id}/queues/{self.queue_id} not found"


@dataclass(frozen=True, slots=True)
class QueueExists:
    tenant_id: str
    queue_id: str

    @property
    def message(self) -> str:
        return f"queue tenants/{self.tenant_id}/queues/{self.queue_id} already exists"


@dataclass(frozen=True, slots=True)
class QueueVersionMismatch:
    expected: int
    actual: int

    @property
    def message(self) -> str:
        return f"expected version {self.expected} but the queue is at {self.actual}"


@dataclass(frozen=True, slots=True)
class QueueNotEmpty:
    queue_id: str
    pending: int

    @property
    def message(self) -> str:
        if self.queue_id == "default":
            return "the default queue cannot be deleted"
        return f"queue {self.queue_id!r} still holds {self.pending} pending call(s): purge it first"


QueueRefusal = QueueNotFound | QueueExists | QueueVersionMismatch | QueueNotEmpty

# A change of one queue, decided on its current value (`default` with no row: its defaults).
QueueStep = Callable[[Queue], Queue | QueueRefusal | Invalid]


@dataclass(frozen=True, slots=True)
class QueuePage:
    items: Sequence[Queue]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class HeldCall:
    """A held call as the dispatcher sees it: its place (due time, then id) and what its
    ordering needs."""

    service_call_id: str
    due_at: datetime
    attempt: int
    ordering_key: str | None
    replay_of: str | None
    held_reason: str


@dataclass(frozen=True, slots=True)
class QueueBacklog:
    """What the dispatcher reads of one claimed queue, under its claim: the queue (its row or
    the defaults), its held calls in queue order (at most a page), how many of its calls are
    in flight, and the history of each ordering key among the held calls."""

    queue: Queue
    held: Sequence[HeldCall]
    in_flight: int
    keys: Mapping[str, KeyHistory]


# What the dispatcher does with one claimed queue: releases some of its held calls and gives
# the rate limiter's new state (`tat`) to write.
Dispatch = Callable[[QueueBacklog], Awaitable[datetime | None]]


class QueueStore(Protocol):
    async def create(self, queue: Queue) -> bool:
        """Stores a new queue; False (nothing written) when its id is taken in its tenant."""
        ...

    async def get(self, tenant_id: str, queue_id: str) -> Queue | None:
        """The queue's row; None when it has none (for `default`: never changed)."""
        ...

    async def list(self, tenant_id: str, page_size: int, after: str | None) -> QueuePage:
        """The tenant's queues with a row, by queue id, from the first one after `after`."""
        ...

    async def all(self) -> Sequence[Queue]:
        """Every queue with a row (QueueConfigs' refresh)."""
        ...

    async def change(
        self, tenant_id: str, queue_id: str, step: QueueStep
    ) -> Queue | QueueRefusal | Invalid:
        """Runs `step` on the queue as it is, holding it (a dispatcher's claim waits, and is
        waited for), and writes the queue it gives unless that equals the current one.
        `default` without a row is stepped from its defaults and created; any other queue
        without a row is QueueNotFound, without calling `step`."""
        ...

    async def delete(self, tenant_id: str, queue_id: str) -> Queue | QueueRefusal:
        """Deletes a queue holding no pending (SCHEDULED) call; the queue as it was."""
        ...

    async def pending_ids(self, tenant_id: str, queue_id: str, limit: int) -> Sequence[str]:
        """Ids of the queue's SCHEDULED calls (held or waiting), earliest due first."""
        ...

    async def claim_held(self, limit: int, page: int, dispatch: Dispatch) -> int:
        """Claims the queues that have held calls and that nobody else holds (at most
        `limit`), reads each one's backlog (at most `page` held calls) and awaits `dispatch`
        for it, writing the `tat` it gives, one transaction per queue. Returns how many
        queues were claimed."""
        ...
