"""Schedules: a recurrence (cron expression in a time zone, between an optional start and end)
and the call template made at each of its occurrences; which occurrences a pass makes.

Pure: time comes in as arguments (aware datetimes, compared as instants); nothing here knows
how schedules are stored or how their calls are submitted (service_layer/schedules.py).
"""

from __future__ import annotations

import enum
import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from itertools import takewhile
from typing import assert_never
from zoneinfo import ZoneInfo, available_timezones

# croniter ships no type hints (no types-croniter pinned): its few calls here are typed by use.
from croniter import (  # type: ignore[import-untyped]
    CroniterBadCronError,
    CroniterBadDateError,
    croniter,
)

from orchestrator.domain.model import HttpRequest, ResponseRules, RetryPolicy
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
    response_rules: ResponseRules | None = None
    # The queue each occurrence's call goes through (None: `default`) and its ordering key:
    # one key makes the occurrences run one after another, never overlapping.
    queue_id: str | None = None
    ordering_key: str | None = None


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


# --- The rules of a recurrence -------------------------------------------------------------
#
# A cron expression is matched in naive local wall-clock time (croniter never sees a time
# zone), and each matching wall time is then read in the schedule's zone: a wall time that
# occurs twice names its first instant (fold=0), one skipped by a spring-forward gap names the
# instant the gap ends. That reading never decreases as wall time advances, so a walk over
# matching wall times gives occurrences in order once instants equal to the previous one (gap
# times folded onto the gap's end) are dropped. `@every` is instant arithmetic from the
# anchor, the same in every zone.

_CRON = "schedule.cron"
_TIME_ZONE = "schedule.time_zone"
_START = "schedule.start_time"
_END = "schedule.end_time"
_SCHEDULE_ID = "schedule.schedule_id"
_DESCRIPTION = "schedule.description"

MAX_SCHEDULE_ID_LENGTH = 63
MAX_DESCRIPTION_LENGTH = 1000
MIN_EVERY = timedelta(seconds=1)
MAX_EVERY = timedelta(days=366)

_SCHEDULE_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")

_ACCEPTED = (
    "a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. `*/5 * * * *`),"
    " one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly,"
    " or `@every <duration>` (e.g. `@every 30s`, `@every 1h30m`)"
)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
_WEEKDAYS = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _WEEKDAYS),
)

# One item of a field's comma-separated list: `*`, `v` or `a-b`, the first and last with an
# optional `/step`. croniter also takes L, W, #, ?, R and H: the contract does not promise them.
_ITEM = re.compile(r"(?:(?P<star>\*)|(?P<a>[0-9a-z]+)(?:-(?P<b>[0-9a-z]+))?)(?:/(?P<step>[0-9]+))?")

# `@every` durations are Go's: numbers (decimals allowed) each with a unit, `1h30m`, `90s`.
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:h|ms|m|s))+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": Decimal(3600), "m": Decimal(60), "s": Decimal(1), "ms": Decimal("0.001")}

# The smallest step of a datetime: "at or after t" is "after t - _TICK".
_TICK = timedelta(microseconds=1)
_DAY_MICROSECONDS = 86_400_000_000
_MINUTE_MICROSECONDS = 60_000_000


class _CronError(ValueError):
    """A cron text the contract does not accept; its message says why, for the caller."""


@dataclass(frozen=True, slots=True)
class _Every:
    interval: timedelta


@dataclass(frozen=True, slots=True)
class _Cron:
    # The 5-field expression croniter walks (a macro already expanded).
    expression: str
    zone: ZoneInfo
    # The microsecond of a day at which each matching (hour, minute) falls, ascending.
    times_of_day: tuple[int, ...]
    # Day of month, month and day of week are all `*`.
    every_day: bool


def _parse_every(duration: str) -> timedelta:
    if not _DURATION.fullmatch(duration):
        raise _CronError(
            f"`@every {duration}`: the duration must be numbers with units h, m, s or ms,"
            " as in `@every 30s`, `@every 90m` or `@every 1h30m`"
        )
    seconds = sum(
        (
            Decimal(number) * _UNIT_SECONDS[unit]
            for number, unit in _DURATION_PART.findall(duration)
        ),
        Decimal(0),
    )
    if seconds != seconds.to_integral_value():
        raise _CronError(f"`@every {duration}`: the duration must be a whole number of seconds")
    interval = timedelta(seconds=int(seconds))
    if not MIN_EVERY <= interval <= MAX_EVERY:
        raise _CronError(f"`@every {duration}`: the duration must be from 1s to 366 days (8784h)")
    return interval


def _field_problem(text: str, field: _Field) -> str | None:
    def value(token: str) -> int | None:
        if token.isdigit():
            number = int(token)
            return number if field.low <= number <= field.high else None
        return field.names.get(token.lower())

    allowed = f"{field.low}-{field.high}"
    if field.names:
        allowed += f" or a name ({', '.join(name.upper() for name in field.names)})"
    for item in text.split(","):
        match = _ITEM.fullmatch(item.lower())
        if match is None:
            return (
                f"{field.name} `{text}`: each comma-separated item must be `*`, a value,"
                " or a range `a-b`, optionally with a step (`*/15`, `1-10/2`)"
            )
        if match["a"] is not None:
            low = value(match["a"])
            high = value(match["b"]) if match["b"] is not None else low
            if low is None or high is None:
                return f"{field.name} `{text}`: values must be {allowed}"
            if low > high:
                return f"{field.name} `{text}`: a range must not end before it starts"
            if match["step"] is not None and match["b"] is None:
                return f"{field.name} `{text}`: a step applies to `*` or a range (`*/5`, `0-30/5`)"
        if match["step"] is not None and not 1 <= int(match["step"]) <= field.high:
            return f"{field.name} `{text}`: the step must be from 1 to {field.high}"
    return None


def _parse_cron(cron: str) -> timedelta | str:
    """The `@every` interval, or the 5-field expression to walk; _CronError if not accepted."""
    text = cron.strip()
    if not text:
        raise _CronError(f"is required: {_ACCEPTED}")
    if text.startswith("@"):
        keyword, _, rest = text.partition(" ")
        keyword = keyword.lower()
        if keyword == "@every":
            return _parse_every(rest.strip())
        if keyword in _MACROS and not rest.strip():
            return _MACROS[keyword]
        raise _CronError(f"`{text}` is not accepted: must be {_ACCEPTED}")
    fields = text.split()
    if len(fields) != len(_FIELDS):
        raise _CronError(
            f"`{text}` has {len(fields)} fields: must be {_ACCEPTED} (no seconds or years field)"
        )
    problems = [
        problem
        for field_text, field in zip(fields, _FIELDS, strict=True)
        if (problem := _field_problem(field_text, field)) is not None
    ]
    if problems:
        raise _CronError("; ".join(problems))
    expression = " ".join(fields)
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise _CronError(f"`{text}` never occurs: no month has that day") from None
    except CroniterBadCronError as error:
        raise _CronError(f"`{text}` is not accepted ({error}): must be {_ACCEPTED}") from None
    return expression


@lru_cache(maxsize=4096)
def _rule(cron: str, time_zone: str) -> _Every | _Cron:
    """The compiled rule of a recurrence (cached: passes over many schedules share few rules)."""
    parsed = _parse_cron(cron)
    if isinstance(parsed, timedelta):
        return _Every(parsed)
    expanded = croniter(parsed).expanded
    minutes, hours = expanded[:2]
    minute_set = range(60) if minutes == ["*"] else [int(m) for m in minutes]
    hour_set = range(24) if hours == ["*"] else [int(h) for h in hours]
    times_of_day = sorted(
        (hour * 60 + minute) * _MINUTE_MICROSECONDS for hour in hour_set for minute in minute_set
    )
    every_day = all(values == ["*"] for values in expanded[2:])
    return _Cron(parsed, ZoneInfo(time_zone or "UTC"), tuple(times_of_day), every_day)


@lru_cache(maxsize=1)
def _time_zone_names() -> frozenset[str]:
    # `localtime` is the host's zone under a file name, not an IANA name.
    return frozenset(available_timezones() - {"localtime"})


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")


def _is_aware(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() is not None


# --- Wall time and instants ----------------------------------------------------------------


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    # fold=0: a wall time here is a label; which of its instants it names is _instant's choice
    # (a fold carried along would silently pick the second instant of a repeated time).
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a wall time names in `zone`: the first of a repeated time; for a time
    skipped by a gap, the instant the gap ends."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(first, zone) == wall:
        return first
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    # Read with the offset after the change (fold=1) a skipped wall time names an instant
    # before the change; with the offset before it (fold=0), one after. The change lies
    # between: find its second.
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    after = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    offset_after = after.astimezone(zone).utcoffset()
    low, high = 0, int((after - before).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        if (before + timedelta(seconds=middle)).astimezone(zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return before + timedelta(seconds=high)


def _as_croniter_time(wall: datetime) -> datetime:
    # croniter is given wall time labelled UTC, so that it applies no zone rules of its own.
    return wall.replace(tzinfo=UTC)


def _cron_forward(rule: _Cron, after: datetime) -> Iterator[datetime]:
    """Occurrences strictly after `after`, ascending."""
    # Wall times up to after's own name instants not after it (its own, or, when `after` is
    # the second of a repeated time, the first): start there.
    matches = croniter(rule.expression, _as_croniter_time(_wall(after, rule.zone)))
    last = after
    while True:
        try:
            wall = matches.get_next(datetime).replace(tzinfo=None)
            occurrence = _instant(wall, rule.zone)
        except (CroniterBadDateError, OverflowError, ValueError):
            return
        if occurrence > last:
            yield occurrence
            last = occurrence


def _cron_backward(rule: _Cron, before: datetime) -> Iterator[datetime]:
    """Occurrences strictly before `before`, descending."""
    local = before.astimezone(rule.zone)
    wall = local.replace(tzinfo=None, fold=0)
    if local.fold:
        # `before` is the second time of a repeated wall time: the wall times up to the end of
        # the repetition name their first, earlier, instants. Start after them.
        first_offset = wall.replace(tzinfo=rule.zone).utcoffset()
        second_offset = local.utcoffset()
        assert first_offset is not None and second_offset is not None
        wall += first_offset - second_offset
    matches = croniter(rule.expression, _as_croniter_time(wall))
    last = before
    while True:
        try:
            wall = matches.get_prev(datetime).replace(tzinfo=None)
            occurrence = _instant(wall, rule.zone)
        except (CroniterBadDateError, OverflowError, ValueError):
            return
        if occurrence < last:
            yield occurrence
            last = occurrence


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return _instant(datetime.combine(day, time.min), zone)


def _offset_changes_on(day: date, zone: ZoneInfo) -> bool:
    start = datetime.combine(day, time.min, tzinfo=zone)
    return start.utcoffset() != (start + timedelta(days=1)).utcoffset()


def _microsecond_of_day(wall: datetime) -> int:
    return (wall.hour * 3600 + wall.minute * 60 + wall.second) * 1_000_000 + wall.microsecond


def _count_on_changing_day(rule: _Cron, day: date, start: datetime, end: datetime) -> int:
    # On a day whose offset changes, several wall times may name one instant (a gap) and some
    # instants have no wall time of their own (a repetition's second half): read each of the
    # day's matching wall times and count the distinct instants in the span.
    midnight = datetime.combine(day, time.min)
    instants = {
        _instant(midnight + timedelta(microseconds=offset), rule.zone)
        for offset in rule.times_of_day
    }
    return sum(1 for instant in instants if start <= instant < end)


def _cron_count(rule: _Cron, start: datetime, end: datetime) -> int:
    """How many occurrences fall in [start, end), without walking them one by one: a day
    whose offset does not change has its matching (hour, minute) pairs, all of them, in
    order; only days with an offset change, and days without matches, need croniter."""
    zone = rule.zone
    count = 0
    day = _wall(start, zone).date()
    low = start
    try:
        while low < end:
            # The first day, from this one, with any match: hours and minutes match on every
            # day whose date does.
            if rule.every_day:
                first_match_day = day
            else:
                probe = croniter(
                    rule.expression, _as_croniter_time(datetime.combine(day, time.min) - _TICK)
                )
                first_match_day = probe.get_next(datetime).date()
            if first_match_day > day:
                day = first_match_day
                low = max(low, _midnight(day, zone))
                continue
            day_end = _midnight(day + timedelta(days=1), zone)
            high = min(end, day_end)
            if low < high:
                if _offset_changes_on(day, zone):
                    count += _count_on_changing_day(rule, day, low, high)
                else:
                    times = rule.times_of_day
                    first = _microsecond_of_day(_wall(low, zone))
                    if high < day_end:
                        last = _microsecond_of_day(_wall(high, zone))
                    else:
                        last = _DAY_MICROSECONDS
                    count += bisect_left(times, last) - bisect_left(times, first)
            low = max(low, high)
            day += timedelta(days=1)
    except (CroniterBadDateError, OverflowError):
        pass
    return count


def _every_forward(anchor: datetime, interval: timedelta, after: datetime) -> Iterator[datetime]:
    step = 0 if after < anchor else (after - anchor) // interval + 1
    try:
        while True:
            yield anchor + step * interval
            step += 1
    except OverflowError:
        return


def _every_backward(anchor: datetime, interval: timedelta, before: datetime) -> Iterator[datetime]:
    if before <= anchor:
        return
    # The largest step whose occurrence is strictly before `before`.
    step = (before - anchor - _TICK) // interval
    try:
        while step >= 0:
            yield anchor + step * interval
            step -= 1
    except OverflowError:
        return


def _every_count(anchor: datetime, interval: timedelta, start: datetime, end: datetime) -> int:
    # Steps k >= 0 with start <= anchor + k*interval < end: k from ceil((start - anchor) / i)
    # up to, excluding, ceil((end - anchor) / i).
    first = max(0, -((anchor - start) // interval))
    stop = max(0, -((anchor - end) // interval))
    return max(0, stop - first)


# --- Occurrences within the recurrence's bounds ---------------------------------------------


def _forward(recurrence: Recurrence, after: datetime) -> Iterator[datetime]:
    """Occurrences strictly after `after`, from start_at, before end_at, ascending."""
    if recurrence.start_at is not None and after < recurrence.start_at:
        after = recurrence.start_at - _TICK
    rule = _rule(recurrence.cron, recurrence.time_zone)
    if isinstance(rule, _Every):
        walk = _every_forward(recurrence.anchor, rule.interval, after)
    else:
        walk = _cron_forward(rule, after)
    end_at = recurrence.end_at
    return walk if end_at is None else takewhile(lambda o: o < end_at, walk)


def _backward(recurrence: Recurrence, before: datetime) -> Iterator[datetime]:
    """Occurrences strictly before `before`, before end_at, from start_at, descending."""
    if recurrence.end_at is not None and before > recurrence.end_at:
        before = recurrence.end_at
    rule = _rule(recurrence.cron, recurrence.time_zone)
    if isinstance(rule, _Every):
        walk = _every_backward(recurrence.anchor, rule.interval, before)
    else:
        walk = _cron_backward(rule, before)
    start_at = recurrence.start_at
    return walk if start_at is None else takewhile(lambda o: o >= start_at, walk)


def _count(recurrence: Recurrence, start: datetime, end: datetime) -> int:
    """How many occurrences fall in [start, end)."""
    if recurrence.start_at is not None:
        start = max(start, recurrence.start_at)
    if recurrence.end_at is not None:
        end = min(end, recurrence.end_at)
    if start >= end:
        return 0
    rule = _rule(recurrence.cron, recurrence.time_zone)
    if isinstance(rule, _Every):
        return _every_count(recurrence.anchor, rule.interval, start, end)
    return _cron_count(rule, start, end)


# --- The module's functions ------------------------------------------------------------------


def parse_recurrence(
    cron: str,
    time_zone: str,
    start_at: datetime | None,
    end_at: datetime | None,
    anchor: datetime,
) -> Recurrence | list[FieldViolation]:
    """The recurrence, or every problem with it (fields `schedule.cron`, `schedule.time_zone`,
    `schedule.start_time`, `schedule.end_time`). An empty time zone means UTC (and the
    recurrence says "UTC"). `anchor` (aware) is where `@every` counts from: the start time, or
    the schedule's creation."""
    _require_aware(anchor, "anchor")
    violations: list[FieldViolation] = []
    try:
        _parse_cron(cron)
    except _CronError as refusal:
        violations.append(FieldViolation(_CRON, str(refusal)))
    zone_name = time_zone or "UTC"
    if zone_name not in _time_zone_names():
        violations.append(
            FieldViolation(
                _TIME_ZONE,
                f"`{time_zone}` is not a known IANA time zone name: must be one such as"
                " `Europe/Paris` or `America/New_York`, or empty for UTC",
            )
        )
    for field, value in ((_START, start_at), (_END, end_at)):
        if value is not None and not _is_aware(value):
            violations.append(FieldViolation(field, "must be an instant (with a UTC offset)"))
    if end_at is not None and _is_aware(end_at):
        if start_at is not None and _is_aware(start_at):
            if end_at <= start_at:
                violations.append(FieldViolation(_END, "must be after start_time"))
        elif start_at is None and end_at <= anchor:
            violations.append(
                FieldViolation(_END, "must be after the schedule's creation (no start_time)")
            )
    if violations:
        return violations
    return Recurrence(cron, zone_name, start_at, end_at, anchor)


def next_occurrence(recurrence: Recurrence, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after`, or None when none is left before the end."""
    _require_aware(after, "after")
    return next(_forward(recurrence, after), None)


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
    says which of those are made.

    The plan's `next_at` is the first occurrence not made (past the window, or past `limit`),
    so that the next pass carries on from it; None once the recurrence has ended. However long
    the outage, a pass walks at most MAX_MISSED_FIRED missed occurrences (back from the latest)
    and counts the rest without walking them."""
    _require_aware(next_at, "next_at")
    _require_aware(now, "now")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    first = next(_forward(recurrence, next_at - _TICK), None)
    if first is None:
        return OccurrencePlan(make=(), missed=0, next_at=None)
    cutoff = now - missed_after
    horizon = now + lookahead
    chosen: list[datetime] = []
    missed = 0
    if first < cutoff:
        match policy:
            case MissedOccurrencePolicy.FIRE_LATEST:
                latest = next(_backward(recurrence, cutoff))
                chosen.append(latest)
                missed = _count(recurrence, first, latest)
            case MissedOccurrencePolicy.FIRE_ALL:
                for occurrence in _backward(recurrence, cutoff):
                    if occurrence < first or len(chosen) == MAX_MISSED_FIRED:
                        break
                    chosen.append(occurrence)
                chosen.reverse()
                missed = _count(recurrence, first, chosen[0])
            case MissedOccurrencePolicy.SKIP:
                missed = _count(recurrence, first, cutoff)
            case _:
                assert_never(policy)
        upcoming = _forward(recurrence, cutoff - _TICK)
    else:
        upcoming = _forward(recurrence, first - _TICK)
    following: datetime | None = None
    for occurrence in upcoming:
        if occurrence > horizon or len(chosen) > limit:
            following = occurrence
            break
        chosen.append(occurrence)
    if len(chosen) > limit:
        return OccurrencePlan(make=tuple(chosen[:limit]), missed=missed, next_at=chosen[limit])
    return OccurrencePlan(make=tuple(chosen), missed=missed, next_at=following)


def occurrence_key(schedule_id: str, occurrence_at: datetime) -> str:
    """The idempotency key of an occurrence's call: the same schedule and occurrence time
    always give the same key, and so the same call id, whoever makes it and however often.
    `schedule:<id>:<UTC time to the millisecond>Z` (occurrences are at least a second apart)."""
    _require_aware(occurrence_at, "occurrence_at")
    utc = occurrence_at.astimezone(UTC).replace(tzinfo=None)
    return f"schedule:{schedule_id}:{utc.isoformat(timespec='milliseconds')}Z"


def validate_schedule_id(schedule_id: str) -> list[FieldViolation]:
    """Problems with a schedule id given on create (a generated UUIDv7 also passes)."""
    if len(schedule_id) <= MAX_SCHEDULE_ID_LENGTH and _SCHEDULE_ID_PATTERN.fullmatch(schedule_id):
        return []
    return [
        FieldViolation(
            _SCHEDULE_ID,
            f"must be 1 to {MAX_SCHEDULE_ID_LENGTH} characters: lowercase letters, digits and"
            " hyphens, starting with a letter or digit",
        )
    ]


def validate_description(description: str) -> list[FieldViolation]:
    if len(description) <= MAX_DESCRIPTION_LENGTH:
        return []
    return [FieldViolation(_DESCRIPTION, f"must be at most {MAX_DESCRIPTION_LENGTH} characters")]
