"""A durable timer and its identity; standard library only."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

# Never change: timer ids of armed timers depend on it.
TIMER_NAMESPACE = uuid.UUID("0b7f6a51-2f43-5d6e-9a38-51b1e7c6a0d4")


# servicecall.internal.v1.TimerPurpose.TIMER_PURPOSE_HANDOFF (tests/unit/scheduler checks it):
# the one purpose whose timers may fire early, because the orchestrator accepts an early
# hand-off (Timing.handoff_early_max) and the executor still sends at the due time.
HANDOFF_PURPOSE = 1


class Upcoming(NamedTuple):
    """A pending timer as the firing loop's window sees it."""

    fire_at: datetime
    # The fire time, or the end of the lease of a claim that holds it.
    attention: datetime
    # A hand-off timer no claim holds: the window may pull it forward.
    may_fire_early: bool = False


class TimerState(enum.Enum):
    PENDING = "pending"
    FIRED = "fired"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class TimerKey:
    """What a timer is for. Two requests for the same key are the same timer."""

    tenant_id: str
    service_call_id: str
    purpose: int
    attempt: int
    fire_at: datetime

    def timer_id(self) -> str:
        micros = (self.fire_at - datetime(1970, 1, 1, tzinfo=self.fire_at.tzinfo)) // timedelta(
            microseconds=1
        )
        parts = (self.tenant_id, self.service_call_id, self.purpose, self.attempt, micros)
        return str(uuid.uuid5(TIMER_NAMESPACE, "\x00".join(map(str, parts))))


@dataclass(frozen=True, slots=True)
class Timer:
    key: TimerKey
    # The envelope that armed it. A re-arm after firing comes with a new one, and the fire's
    # event id derives from it, so the orchestrator's inbox tells a redelivery from a re-arm.
    armed_by: str
    correlation_id: str
    sequence: int
    state: TimerState = TimerState.PENDING
    # The W3C trace context of the request that armed it, opaque here: the fire, maybe much
    # later and in another process, continues that trace (mesh/tracing.py).
    trace_context: Mapping[str, str] | None = field(default=None, compare=False)
    # Derived from the key once (a uuid5 was a visible share of the scheduler's CPU when it
    # was worked out again at each of the half-dozen places that ask for it).
    timer_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "timer_id", self.key.timer_id())

    @property
    def fire_event_id(self) -> str:
        return f"{self.armed_by}/fired"


def sleep_for(next_fire_at: datetime | None, now: datetime, max_sleep: timedelta) -> timedelta:
    """How long the firing loop may sleep: until the next timer, never longer than max_sleep
    (the safety net for a wake-up lost between processes), never negative."""
    if next_fire_at is None:
        return max_sleep
    return max(timedelta(0), min(next_fire_at - now, max_sleep))
