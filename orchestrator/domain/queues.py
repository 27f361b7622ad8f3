"""Queues (#18, QueueService): how a tenant controls the delivery of its calls (a rate with a
burst, a bound on calls in flight, paused or running), which calls a queue gates, and the rate
arithmetic of its dispatcher; ordering keys and their failure policy.

Pure: time comes in as arguments; nothing here knows how queues are stored or how held calls
are released (orchestrator/service_layer/queues.py).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from orchestrator.domain.validation import FieldViolation

# Every tenant's queue; it exists without a row until it is first changed.
DEFAULT_QUEUE_ID = "default"

_QUEUE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

MAX_ORDERING_KEY_LENGTH = 256
# Well above what one executor sends; a bound keeps the arithmetic (1 / rate) sane.
MAX_DISPATCHES_PER_SECOND = 10_000.0
MAX_BURST_SIZE = 10_000
MAX_CONCURRENT_DISPATCHES = 100_000


class QueueState(enum.Enum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"


class OrderingFailurePolicy(enum.Enum):
    # A key's later calls wait until its failed call is replayed and the replay succeeds.
    BLOCK = "BLOCK"
    # The key's next call goes on after a failed one as after a success.
    SKIP = "SKIP"


# The fields UpdateQueue may change (its update_mask paths); an empty mask means all.
QUEUE_FIELDS = frozenset(
    {
        "max_dispatches_per_second",
        "max_burst_size",
        "max_concurrent_dispatches",
        "ordering_failure_policy",
    }
)


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue as kept. `max_dispatches_per_second` 0: no rate limit (then `max_burst_size` is
    not used); `max_burst_size` 0 means 1; `max_concurrent_dispatches` 0: no limit.

    `tat` is the rate limiter's state (GCRA's theoretical arrival time, see `release_times`);
    None until the queue first sends at a rate. `version` 0 and no times: the implicit
    `default` queue, never changed."""

    tenant_id: str
    queue_id: str
    max_dispatches_per_second: float = 0.0
    max_burst_size: int = 0
    max_concurrent_dispatches: int = 0
    ordering_failure_policy: OrderingFailurePolicy = OrderingFailurePolicy.BLOCK
    state: QueueState = QueueState.RUNNING
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    tat: datetime | None = None

    @property
    def paused(self) -> bool:
        return self.state is QueueState.PAUSED

    @property
    def burst(self) -> int:
        return max(1, self.max_burst_size)

    @property
    def gates(self) -> bool:
        """Whether the queue's calls go through its dispatcher (held at hand-off, released
        within its limits); an unlimited running queue's calls are handed off as they come
        due, on the path every call took before queues existed."""
        return (
            self.paused or self.max_dispatches_per_second > 0 or self.max_concurrent_dispatches > 0
        )


def default_queue(tenant_id: str) -> Queue:
    return Queue(tenant_id=tenant_id, queue_id=DEFAULT_QUEUE_ID)


def paused_reason(queue_id: str) -> str:
    return f'held by paused queue "{queue_id}"'


def rate_reason(queue_id: str) -> str:
    return f'waiting for queue "{queue_id}"\'s rate limit'


def concurrency_reason(queue_id: str) -> str:
    return f'waiting for queue "{queue_id}"\'s concurrency limit'


# How the reason of a call waiting behind an earlier held call of its key begins: such a call
# cannot go before that one does, so the dispatcher does not read it again (adapters/queues).
FOLLOWER_REASON_PREFIX = "waiting for the calls before it"


def ordering_reason(service_call_id: str | None, ordering_key: str) -> str:
    if service_call_id is None:
        return f'{FOLLOWER_REASON_PREFIX} (ordering key "{ordering_key}")'
    return f'waiting for call {service_call_id} (ordering key "{ordering_key}")'


def queue_gate(queue: Queue | None, queue_id: str, ordering_key: str | None) -> str | None:
    """Why a call of `queue_id` (`queue`: its config, None when it has none, i.e. unlimited and
    running) with `ordering_key` is held when its hand-off comes, or None: it is not gated and
    goes to the executor at once. The reason is a first word; the dispatcher refines it."""
    if queue is not None and queue.paused:
        return paused_reason(queue_id)
    if ordering_key is not None:
        return ordering_reason(None, ordering_key)
    if queue is not None and queue.max_dispatches_per_second > 0:
        return rate_reason(queue_id)
    if queue is not None and queue.max_concurrent_dispatches > 0:
        return concurrency_reason(queue_id)
    return None


def release_times(
    tat: datetime | None,
    now: datetime,
    rate: float,
    burst: int,
    waiting: int,
    horizon: timedelta,
) -> tuple[list[datetime], datetime | None]:
    """When each of `waiting` calls (in queue order) may be sent, and the limiter's next state:
    GCRA (the generic cell rate algorithm, the virtual-scheduling form of a token bucket of
    `burst` tokens refilled at `rate` per second).

    `tat` (theoretical arrival time) is when the bucket would be full again if nothing more
    were sent; a call may go at `tat - (burst - 1) * interval` or later, and each one moves
    `tat` on by one interval. So over any window of length W at most `burst + W * rate` calls
    are sent, an idle queue refills (a `tat` in the past counts from `now`), and the times
    never fall before `now`.

    Only calls whose send time is within `horizon` of `now` are given one (the dispatcher
    releases those and hands them off to be sent at their time; the others keep their place
    for a later pass). `rate` 0 means unlimited: every call at `now`, `tat` unchanged.
    """
    if waiting <= 0:
        return [], tat
    if rate <= 0:
        return [now] * waiting, tat
    interval = timedelta(seconds=1 / rate)
    tolerance = interval * (max(1, burst) - 1)
    current = now if tat is None else max(tat, now)
    times: list[datetime] = []
    for _ in range(waiting):
        send_at = max(now, current - tolerance)
        if send_at > now + horizon:
            break
        times.append(send_at)
        current = max(current, send_at) + interval
    if not times:
        return [], tat
    return times, current


@dataclass(frozen=True, slots=True)
class KeyHistory:
    """What the dispatcher knows of one ordering key of a queue when it comes to release.

    `busy`: a call of the key is in flight (DISPATCHED or RUNNING) or waiting to retry
    (a SCHEDULED call that has made attempts): it is the key's head, nothing else may start.
    `head`: the id of the key's first call not yet started, by due time then id (or None).
    `last_finished_failed`: the id of the key's latest finished call (SUCCEEDED or FAILED, by
    completion) when that call FAILED, else None; canceled calls do not count."""

    busy: str | None
    head: str | None
    last_finished_failed: str | None


def may_start(
    service_call_id: str,
    replay_of: str | None,
    retrying: bool,
    key: KeyHistory,
    policy: OrderingFailurePolicy,
) -> str | None:
    """Whether a held call with an ordering key may be released now: None, or the id of the
    call it waits for.

    One call of a key at a time: none while another is in flight or retrying. A held retry
    (`retrying`) is the key's head itself and goes. Otherwise the key's first call by due
    time goes, unless the key is blocked (BLOCK, and its latest finished call failed): then
    only a replay of the failed call goes, first, out of due-time order; its success unblocks
    the key, its failure keeps it blocked (a replay of the replay is then needed).
    """
    if key.busy is not None and key.busy != service_call_id:
        return key.busy
    if retrying:
        return None
    blocking = key.last_finished_failed if policy is OrderingFailurePolicy.BLOCK else None
    if blocking is not None:
        return None if replay_of == blocking else blocking
    if key.head is not None and key.head != service_call_id:
        return key.head
    return None


def validate_queue_id(queue_id: str, field: str) -> list[FieldViolation]:
    if not _QUEUE_ID.fullmatch(queue_id):
        return [FieldViolation(field, "must match [a-z0-9][a-z0-9-]*, at most 63 characters")]
    return []


def validate_ordering_key(key: str, field: str) -> list[FieldViolation]:
    if not 1 <= len(key) <= MAX_ORDERING_KEY_LENGTH:
        return [FieldViolation(field, f"must be 1 to {MAX_ORDERING_KEY_LENGTH} characters")]
    if not key.isprintable():
        return [FieldViolation(field, "must be printable characters only")]
    return []


def validate_queue(queue: Queue, prefix: str = "queue") -> list[FieldViolation]:
    problems = validate_queue_id(queue.queue_id, f"{prefix}.queue_id")
    rate = queue.max_dispatches_per_second
    if not math.isfinite(rate) or not 0 <= rate <= MAX_DISPATCHES_PER_SECOND:
        problems.append(
            FieldViolation(
                f"{prefix}.max_dispatches_per_second",
                f"must be 0 (no limit) to {MAX_DISPATCHES_PER_SECOND:g}",
            )
        )
    elif 0 < rate < 1 / 86400:
        problems.append(
            FieldViolation(
                f"{prefix}.max_dispatches_per_second", "must be at least one a day (1/86400)"
            )
        )
    if not 0 <= queue.max_burst_size <= MAX_BURST_SIZE:
        problems.append(
            FieldViolation(f"{prefix}.max_burst_size", f"must be 0 (1) to {MAX_BURST_SIZE}")
        )
    if not 0 <= queue.max_concurrent_dispatches <= MAX_CONCURRENT_DISPATCHES:
        problems.append(
            FieldViolation(
                f"{prefix}.max_concurrent_dispatches",
                f"must be 0 (no limit) to {MAX_CONCURRENT_DISPATCHES}",
            )
        )
    return problems


def updated(queue: Queue, draft: Queue, fields: frozenset[str], now: datetime) -> Queue:
    """`queue` with the `fields` of `draft` (validated by the caller), one version on."""
    return replace(
        queue,
        max_dispatches_per_second=(
            draft.max_dispatches_per_second
            if "max_dispatches_per_second" in fields
            else queue.max_dispatches_per_second
        ),
        max_burst_size=(
            draft.max_burst_size if "max_burst_size" in fields else queue.max_burst_size
        ),
        max_concurrent_dispatches=(
            draft.max_concurrent_dispatches
            if "max_concurrent_dispatches" in fields
            else queue.max_concurrent_dispatches
        ),
        ordering_failure_policy=(
            draft.ordering_failure_policy
            if "ordering_failure_policy" in fields
            else queue.ordering_failure_policy
        ),
        version=queue.version + 1,
        created_at=queue.created_at or now,
        updated_at=now,
    )


def with_state(queue: Queue, state: QueueState, now: datetime) -> Queue:
    """`queue` paused or resumed; the same queue when it already is."""
    if queue.state is state:
        return queue
    return replace(
        queue,
        state=state,
        version=queue.version + 1,
        created_at=queue.created_at or now,
        updated_at=now,
    )


def slots(limit: int, in_flight: int) -> int | None:
    """How many more calls a queue with `max_concurrent_dispatches` = `limit` may have in
    flight: None for no limit."""
    return None if limit <= 0 else max(0, limit - in_flight)


def first_by_due(calls: Sequence[tuple[datetime, str]]) -> str | None:
    """The id of the earliest of (due time, id) pairs."""
    return min(calls)[1] if calls else None
