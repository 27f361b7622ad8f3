"""Schedules: a recurrence (cron expression in a time zone, between an optional start and end)
and the call template made at each of its occurrences; which occurrences a pass makes.

Pure: time comes in as arguments (aware datetimes, compared as instants); nothing here knows
how schedules are stored or how their calls are submitted (service_layer/schedules.py).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    # TEMP: a throwaway body (`@every` only) until the real core is merged.
    problems: list[FieldViolation] = []
    if _temp_every(cron) is None and not _temp_cron_ok(cron):
        problems.append(FieldViolation("schedule.cron", "is not a cron expression"))
    try:
        ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(FieldViolation("schedule.time_zone", "is not an IANA time zone"))
    if start_at is not None and end_at is not None and end_at <= start_at:
        problems.append(FieldViolation("schedule.end_time", "must be after start_time"))
    if problems:
        return problems
    return Recurrence(cron, time_zone or "UTC", start_at, end_at, anchor)


def _temp_every(cron: str) -> timedelta | None:
    match = re.fullmatch(r"@every (\d+)([smh])", cron)
    if match is None:
        return None
    unit = {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    every = timedelta(seconds=int(match.group(1)) * unit)
    return every if every >= timedelta(seconds=1) else None


def _temp_cron_ok(cron: str) -> bool:
    return False


def next_occurrence(recurrence: Recurrence, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after`, or None when none is left before the end."""
    # TEMP: a throwaway body until the real core is merged.
    if recurrence.start_at is not None and after < recurrence.start_at:
        after = recurrence.start_at - timedelta(microseconds=1)
    every = _temp_every(recurrence.cron)
    if every is not None:
        steps = max(0, (after - recurrence.anchor) // every + 1)
        found = recurrence.anchor + steps * every
    else:
        raise NotImplementedError("TEMP: only @every")
    if recurrence.end_at is not None and found >= recurrence.end_at:
        return None
    return found


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
    # TEMP: a throwaway body until the real core is merged.
    due: list[datetime] = []
    at: datetime | None = next_at
    while at is not None and at <= now + lookahead and len(due) < limit + MAX_MISSED_FIRED:
        due.append(at)
        at = next_occurrence(recurrence, at)
    missed = [t for t in due if t < now - missed_after]
    kept = [t for t in due if t >= now - missed_after]
    if missed and policy is MissedOccurrencePolicy.FIRE_LATEST:
        kept.insert(0, missed[-1])
        return OccurrencePlan(tuple(kept[:limit]), len(missed) - 1, at)
    if policy is MissedOccurrencePolicy.FIRE_ALL:
        return OccurrencePlan(tuple(due[:limit]), 0, due[limit] if len(due) > limit else at)
    return OccurrencePlan(tuple(kept[:limit]), len(missed), at)


def occurrence_key(schedule_id: str, occurrence_at: datetime) -> str:
    """The idempotency key of an occurrence's call: the same schedule and occurrence time
    always give the same key, and so the same call id, whoever makes it and however often."""
    # TEMP: a throwaway body until the real core is merged.
    return f"schedule/{schedule_id}/{occurrence_at.astimezone(UTC).isoformat()}"


def validate_schedule_id(schedule_id: str) -> list[FieldViolation]:
    # TEMP: a throwaway body until the real core is merged.
    if re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", schedule_id):
        return []
    return [FieldViolation("schedule.schedule_id", "must match [a-z0-9][a-z0-9-]{0,62}")]


def validate_description(description: str) -> list[FieldViolation]:
    # TEMP: a throwaway body until the real core is merged.
    if len(description) <= 1000:
        return []
    return [FieldViolation("schedule.description", "at most 1000 characters")]
