"""Schedules: a recurrence (cron expression in a time zone, between an optional start and end)
and the call template made at each of its occurrences; which occurrences a pass makes.

Pure: time comes in as arguments (aware datetimes, compared as instants); nothing here knows
how schedules are stored or how their calls are submitted (service_layer/schedules.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.domain.model import HttpRequest, RetryPolicy
from orchestrator.domain.validation import FieldViolation


class MissedOccurrencePolicy(enum.Enum):
    # One call for the latest missed occurrence (the default).
    FIRE_LATEST = "FIRE_LATEST"
    # A call for every missed occurrence, at most MAX_MISSED_FIRED of them per outage.
    FIRE_ALL = "FIRE_ALL"
    # None of them.
    SKIP = "SKIP"


class ScheduleState(enum.Enum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    # Past its end: no occurrence is left.
    ENDED = "ENDED"


# FIRE_ALL after a long outage of a frequent schedule would make a flood of calls at once.
MAX_MISSED_FIRED = 1000


@dataclass(frozen=True, slots=True)
class Recurrence:
    """When occurrences fall: `cron` as given (5-field, `@hourly`-style, or `@every <d>`), read
    in `time_zone` (an IANA name), none before `start_at` nor at or after `end_at`. `@every`
    counts from `anchor` (the start time, or the schedule's creation)."""

    cron: str
    time_zone: str
    start_at: datetime | None
    end_at: datetime | None
    anchor: datetime


@dataclass(frozen=True, slots=True)
class CallTemplate:
    """What each occurrence's call is: the parts of a submission a schedule fixes. Its secret
    headers are kept sealed to the schedule (service_layer/sealing.py) while stored."""

    request: HttpRequest
    tags: frozenset[str]
    retry_policy: RetryPolicy
    callback_url: str | None = None
    failure_callback_url: str | None = None
    max_lateness: timedelta | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    tenant_id: str
    schedule_id: str
    recurrence: Recurrence
    template: CallTemplate
    missed_policy: MissedOccurrencePolicy
    description: str
    state: ScheduleState
    # The next occurrence to make a call for; None when paused or ended.
    next_occurrence_at: datetime | None
    # The latest occurrence a call was made for; None before the first.
    last_occurrence_at: datetime | None
    # Changes applied so far (1 after create): the etag, and the guard of every write.
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OccurrencePlan:
    """What one pass over a schedule does: make a call for each of `make` (oldest first),
    count `missed` occurrences left out by the missed-occurrence policy, and move the
    schedule's next occurrence to `next_at` (None: the recurrence has ended)."""

    make: tuple[datetime, ...]
    missed: int
    next_at: datetime | None


def parse_recurrence(
    cron: str,
    time_zone: str,
    start_at: datetime | None,
    end_at: datetime | None,
    anchor: datetime,
) -> Recurrence | list[FieldViolation]:
    """The recurrence, or every problem with it (fields `schedule.cron`, `schedule.time_zone`,
    `schedule.start_time`, `schedule.end_time`). An empty time zone means UTC."""
    raise NotImplementedError


def next_occurrence(recurrence: Recurrence, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after`, or None when none is left before the end."""
    raise NotImplementedError


def plan_occurrences(
    recurrence: Recurrence,
    policy: MissedOccurrencePolicy,
    next_at: datetime,
    now: datetime,
    lookahead: timedelta,
    missed_after: timedelta,
    limit: int,
) -> OccurrencePlan:
    """The occurrences from `next_at` up to `now + lookahead` to make calls for, at most
    `limit` of them (the rest wait for the next pass). An occurrence earlier than
    `now - missed_after` was missed (the mesh was not there to make it in time): `policy`
    says which of those are made."""
    raise NotImplementedError


def occurrence_key(schedule_id: str, occurrence_at: datetime) -> str:
    """The idempotency key of an occurrence's call: the same schedule and occurrence time
    always give the same key, and so the same call id, whoever makes it and however often."""
    raise NotImplementedError
