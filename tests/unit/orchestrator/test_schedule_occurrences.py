"""When a schedule's occurrences fall (cron and `@every`, in time zones and across their
daylight-saving changes), which occurrences a pass makes after an outage, their keys, and
the refusal of bad recurrences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain import schedules
from orchestrator.domain.schedules import (
    MAX_MISSED_FIRED,
    MissedOccurrencePolicy,
    OccurrencePlan,
    Recurrence,
    next_occurrence,
    occurrence_key,
    parse_recurrence,
    plan_occurrences,
    validate_description,
    validate_schedule_id,
)
from orchestrator.domain.validation import validate_idempotency_key

FIRE_LATEST = MissedOccurrencePolicy.FIRE_LATEST
FIRE_ALL = MissedOccurrencePolicy.FIRE_ALL
SKIP = MissedOccurrencePolicy.SKIP

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    """An instant written with its offset (`2026-03-08T03:00-04:00`), or in UTC (`...Z`)."""
    return datetime.fromisoformat(text)


def recurrence(
    cron: str,
    time_zone: str = "UTC",
    *,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    anchor: datetime = ANCHOR,
) -> Recurrence:
    parsed = parse_recurrence(cron, time_zone, start_at, end_at, anchor)
    assert isinstance(parsed, Recurrence), parsed
    return parsed


# (cron, time zone, after, the next occurrence): each row is checked as an instant.
NEXT_OCCURRENCES = [
    # UTC, 5 fields.
    ("*/5 * * * *", "UTC", "2026-01-01T00:00Z", "2026-01-01T00:05Z"),
    ("*/5 * * * *", "UTC", "2026-01-01T00:02:30Z", "2026-01-01T00:05Z"),
    ("0 9 * * 1-5", "UTC", "2026-01-02T10:00Z", "2026-01-05T09:00Z"),  # Friday -> Monday
    ("0 9 * * mon-FRI", "UTC", "2026-01-02T10:00Z", "2026-01-05T09:00Z"),
    ("0 0 1 * *", "UTC", "2026-01-15T00:00Z", "2026-02-01T00:00Z"),
    ("0 0 29 2 *", "UTC", "2026-01-01T00:00Z", "2028-02-29T00:00Z"),
    ("0 12 * JAN,jul SUN", "UTC", "2026-01-05T00:00Z", "2026-01-11T12:00Z"),
    # Day of month and day of week both restricted: either matches (as in Vixie cron).
    ("0 0 1 * MON", "UTC", "2026-01-02T00:00Z", "2026-01-05T00:00Z"),
    ("0 0 * * 7", "UTC", "2026-01-01T00:00Z", "2026-01-04T00:00Z"),  # 7 is Sunday too
    ("0-30/10 8 * * *", "UTC", "2026-01-01T08:25Z", "2026-01-01T08:30Z"),
    ("  */5   * * * *  ", "UTC", "2026-01-01T00:00Z", "2026-01-01T00:05Z"),
    # Macros.
    ("@yearly", "UTC", "2026-01-01T00:00Z", "2027-01-01T00:00Z"),
    ("@annually", "UTC", "2026-06-01T00:00Z", "2027-01-01T00:00Z"),
    ("@monthly", "UTC", "2026-01-31T23:59:59Z", "2026-02-01T00:00Z"),
    ("@weekly", "UTC", "2026-01-01T00:00Z", "2026-01-04T00:00Z"),
    ("@daily", "UTC", "2026-01-01T00:00Z", "2026-01-02T00:00Z"),
    ("@midnight", "UTC", "2026-01-01T12:00Z", "2026-01-02T00:00Z"),
    ("@hourly", "UTC", "2026-01-01T10:59:59.999999Z", "2026-01-01T11:00Z"),
    # A zone shifts the wall clock the expression is read in.
    ("0 9 * * *", "Europe/Paris", "2026-01-10T00:00Z", "2026-01-10T09:00+01:00"),
    ("@daily", "America/New_York", "2026-01-10T00:00Z", "2026-01-10T00:00-05:00"),
    # Paris 2026: 02:00 CET -> 03:00 CEST on 29 March; 03:00 CEST -> 02:00 CET on 25 October.
    ("30 2 * * *", "Europe/Paris", "2026-03-28T12:00+01:00", "2026-03-29T03:00+02:00"),
    ("30 2 * * *", "Europe/Paris", "2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00"),
    ("0 9 * * *", "Europe/Paris", "2026-03-28T10:00+01:00", "2026-03-29T09:00+02:00"),
    ("30 2 * * *", "Europe/Paris", "2026-10-24T12:00+02:00", "2026-10-25T02:30+02:00"),
    ("30 2 * * *", "Europe/Paris", "2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"),
    ("0 * * * *", "Europe/Paris", "2026-10-25T02:00+02:00", "2026-10-25T03:00+01:00"),
    # New York 2026: 02:00 EST -> 03:00 EDT on 8 March; 02:00 EDT -> 01:00 EST on 1 November.
    ("30 2 * * *", "America/New_York", "2026-03-07T12:00-05:00", "2026-03-08T03:00-04:00"),
    ("30 2 * * *", "America/New_York", "2026-03-08T03:00-04:00", "2026-03-09T02:30-04:00"),
    ("30 2 * * *", "America/New_York", "2026-10-31T12:00-04:00", "2026-11-01T02:30-05:00"),
    ("0 * * * *", "America/New_York", "2026-03-08T01:00-05:00", "2026-03-08T03:00-04:00"),
    ("0 * * * *", "America/New_York", "2026-03-08T03:00-04:00", "2026-03-08T04:00-04:00"),
    ("0 * * * *", "America/New_York", "2026-11-01T00:00-04:00", "2026-11-01T01:00-04:00"),
    ("0 * * * *", "America/New_York", "2026-11-01T01:00-04:00", "2026-11-01T02:00-05:00"),
    ("*/15 * * * *", "America/New_York", "2026-03-08T01:45-05:00", "2026-03-08T03:00-04:00"),
    ("*/15 * * * *", "America/New_York", "2026-03-08T03:00-04:00", "2026-03-08T03:15-04:00"),
    ("*/15 * * * *", "America/New_York", "2026-11-01T01:30-04:00", "2026-11-01T01:45-04:00"),
    ("*/15 * * * *", "America/New_York", "2026-11-01T01:45-04:00", "2026-11-01T02:00-05:00"),
    # From inside the repeated hour: its wall times already fired, the first time.
    ("*/15 * * * *", "America/New_York", "2026-11-01T01:20-05:00", "2026-11-01T02:00-05:00"),
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00-04:00", "2026-11-01T01:30-04:00"),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00"),
    ("30 1 * * *", "America/New_York", "2026-11-01T01:10-05:00", "2026-11-02T01:30-05:00"),
    # Lord Howe 2026: a 30-minute change. 02:00 -> 01:30 on 5 April, 02:00 -> 02:30 on
    # 4 October.
    ("0 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00+10:30", "2026-10-04T02:30+11:00"),
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00+10:30", "2026-10-04T02:30+11:00"),
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-04T02:30+11:00", "2026-10-05T02:15+11:00"),
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00+11:00", "2026-04-05T01:45+11:00"),
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-05T01:45+11:00", "2026-04-06T01:45+10:30"),
    ("*/30 * * * *", "Australia/Lord_Howe", "2026-04-05T01:30+11:00", "2026-04-05T02:00+10:30"),
]


@pytest.mark.parametrize(("cron", "time_zone", "after", "expected"), NEXT_OCCURRENCES)
def test_next_occurrence(cron: str, time_zone: str, after: str, expected: str) -> None:
    found = next_occurrence(recurrence(cron, time_zone), at(after))
    assert found == at(expected)
    assert found is not None and found.utcoffset() == timedelta(0)


def test_an_empty_time_zone_is_utc() -> None:
    assert recurrence("@daily", "").time_zone == "UTC"
    assert next_occurrence(recurrence("0 9 * * *", ""), at("2026-01-01T00:00Z")) == at(
        "2026-01-01T09:00Z"
    )


def test_a_walk_across_the_new_york_spring_gap_fires_each_instant_once() -> None:
    rec = recurrence("*/15 * * * *", "America/New_York")
    walk = [at("2026-03-08T01:20-05:00")]
    for _ in range(6):
        found = next_occurrence(rec, walk[-1])
        assert found is not None
        walk.append(found)
    assert walk[1:] == [
        at("2026-03-08T01:30-05:00"),
        at("2026-03-08T01:45-05:00"),
        # 02:00, 02:15, 02:30 and 02:45 do not exist: they fire once, as the gap ends.
        at("2026-03-08T03:00-04:00"),
        at("2026-03-08T03:15-04:00"),
        at("2026-03-08T03:30-04:00"),
        at("2026-03-08T03:45-04:00"),
    ]


# (@every, anchor, after, the next occurrence): instants from the anchor, whatever the zone.
EVERY = [
    ("@every 1h30m", "2026-03-08T05:00Z", "2026-03-08T04:00Z", "2026-03-08T05:00Z"),
    ("@every 1h30m", "2026-03-08T05:00Z", "2026-03-08T05:00Z", "2026-03-08T06:30Z"),
    # Across New York's spring gap: 01:30 EST + 90 minutes is 04:00 EDT.
    ("@every 1h30m", "2026-03-08T05:00Z", "2026-03-08T06:30Z", "2026-03-08T04:00-04:00"),
    ("@every 90m", "2026-03-08T05:00Z", "2026-03-08T06:29:59Z", "2026-03-08T06:30Z"),
    ("@every 1.5h", "2026-03-08T05:00Z", "2026-03-08T05:00Z", "2026-03-08T06:30Z"),
    ("@every 30s", "2026-01-01T00:00:10Z", "2026-01-01T00:00:40Z", "2026-01-01T00:01:10Z"),
    ("@every 1s", "2026-01-01T00:00Z", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:01Z"),
    ("@every 2000ms", "2026-01-01T00:00Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"),
    # 24 hours, not "the same wall time tomorrow": across Paris's gap the wall time moves.
    ("@every 24h", "2026-03-28T09:00+01:00", "2026-03-28T09:00+01:00", "2026-03-29T10:00+02:00"),
    ("@every 8784h", "2026-01-01T00:00Z", "2026-01-01T00:00Z", "2027-01-02T00:00Z"),
]


@pytest.mark.parametrize("time_zone", ["UTC", "America/New_York", "Europe/Paris"])
@pytest.mark.parametrize(("cron", "anchor", "after", "expected"), EVERY)
def test_every_counts_instants_from_the_anchor(
    cron: str, anchor: str, after: str, expected: str, time_zone: str
) -> None:
    rec = recurrence(cron, time_zone, anchor=at(anchor))
    assert next_occurrence(rec, at(after)) == at(expected)


def test_every_counts_from_the_start_time() -> None:
    start = at("2026-01-01T10:00:07Z")
    rec = recurrence("@every 1m", start_at=start, anchor=start)
    assert next_occurrence(rec, at("2026-01-01T00:00Z")) == start
    assert next_occurrence(rec, start) == at("2026-01-01T10:01:07Z")


# (cron, start, end, after, the next occurrence or None).
BOUNDS = [
    ("0 * * * *", "2026-01-01T10:30Z", None, "2026-01-01T00:00Z", "2026-01-01T11:00Z"),
    # The start itself is an occurrence when the expression matches it.
    ("0 * * * *", "2026-01-01T10:00Z", None, "2026-01-01T00:00Z", "2026-01-01T10:00Z"),
    ("0 * * * *", "2026-01-01T10:00Z", None, "2026-01-01T10:00Z", "2026-01-01T11:00Z"),
    ("0 * * * *", None, "2026-01-01T12:00Z", "2026-01-01T10:30Z", "2026-01-01T11:00Z"),
    # The end is not an occurrence.
    ("0 * * * *", None, "2026-01-01T12:00Z", "2026-01-01T11:00Z", None),
    ("0 * * * *", None, "2026-01-01T12:00Z", "2026-01-01T13:00Z", None),
    (
        "0 * * * *",
        "2026-01-01T10:00Z",
        "2026-01-01T10:00:01Z",
        "2026-01-01T09:00Z",
        ("2026-01-01T10:00Z"),
    ),
    ("@every 1h", "2026-01-01T10:00Z", "2026-01-01T12:00Z", "2026-01-01T11:00Z", None),
]


@pytest.mark.parametrize(("cron", "start", "end", "after", "expected"), BOUNDS)
def test_bounds(
    cron: str, start: str | None, end: str | None, after: str, expected: str | None
) -> None:
    start_at = at(start) if start else None
    rec = recurrence(
        cron,
        start_at=start_at,
        end_at=at(end) if end else None,
        anchor=start_at or ANCHOR,
    )
    assert next_occurrence(rec, at(after)) == (at(expected) if expected else None)


def test_naive_times_are_refused_as_programming_errors() -> None:
    rec = recurrence("@daily")
    with pytest.raises(ValueError, match="aware"):
        next_occurrence(rec, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        occurrence_key("s", datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        parse_recurrence("@daily", "UTC", None, None, datetime(2026, 1, 1))


# --- Keys ------------------------------------------------------------------------------------


def test_occurrence_key_is_deterministic_and_valid() -> None:
    occurrence = at("2026-03-08T07:00Z")
    key = occurrence_key("nightly-report", occurrence)
    assert key == "schedule:nightly-report:2026-03-08T07:00:00.000Z"
    # The same instant written in another zone is the same occurrence.
    assert occurrence_key("nightly-report", at("2026-03-08T03:00-04:00")) == key
    assert occurrence_key("nightly-report", occurrence + timedelta(minutes=1)) != key
    assert occurrence_key("weekly-report", occurrence) != key
    assert validate_idempotency_key(key) == []
    longest = occurrence_key("a" * 63, at("9999-12-31T23:59:59.999999Z"))
    assert validate_idempotency_key(longest) == []


def test_keys_of_a_walk_are_distinct() -> None:
    rec = recurrence("@every 1s")
    plan = plan_occurrences(
        rec, FIRE_ALL, ANCHOR, ANCHOR, timedelta(minutes=5), timedelta(minutes=1), 500
    )
    assert len({occurrence_key("s", o) for o in plan.make}) == len(plan.make) == 301


# --- Passes ----------------------------------------------------------------------------------

T10 = at("2026-01-01T10:00Z")


def minutes(*values: int) -> tuple[datetime, ...]:
    return tuple(T10 + timedelta(minutes=value) for value in values)


# (policy, next_at, now, lookahead, limit, make as minutes after 10:00, missed, next_at as
# minutes after 10:00 or None), for `*/10 * * * *` with occurrences missed after 5 minutes.
PLANS = [
    # On time.
    (FIRE_LATEST, 0, 0, 1, 10, (0,), 0, 10),
    (FIRE_LATEST, 0, 0, 25, 10, (0, 10, 20), 0, 30),
    # Not due yet.
    (FIRE_LATEST, 120, 0, 1, 10, (), 0, 120),
    # next_at between occurrences: the first candidate after it.
    (FIRE_LATEST, 5, 10, 1, 10, (10,), 0, 20),
    # Late, but not missed: 10:00 is 3 minutes late, within missed_after.
    (SKIP, 0, 3, 1, 10, (0,), 0, 10),
    # A short outage: 10:00..10:30 missed (before 10:37), 10:40 in the window.
    (FIRE_LATEST, 0, 42, 1, 10, (30, 40), 3, 50),
    (FIRE_ALL, 0, 42, 1, 10, (0, 10, 20, 30, 40), 0, 50),
    (SKIP, 0, 42, 1, 10, (40,), 4, 50),
    # Limit: the rest wait for the next pass, which starts at the first not made.
    (FIRE_ALL, 0, 42, 1, 2, (0, 10), 0, 20),
    (FIRE_LATEST, 0, 42, 1, 1, (30,), 3, 40),
    (SKIP, 0, 42, 30, 2, (40, 50), 4, 60),
]


@pytest.mark.parametrize(
    ("policy", "next_at", "now", "lookahead", "limit", "make", "missed", "following"), PLANS
)
def test_plan(
    policy: MissedOccurrencePolicy,
    next_at: int,
    now: int,
    lookahead: int,
    limit: int,
    make: tuple[int, ...],
    missed: int,
    following: int | None,
) -> None:
    plan = plan_occurrences(
        recurrence("*/10 * * * *"),
        policy,
        T10 + timedelta(minutes=next_at),
        T10 + timedelta(minutes=now),
        timedelta(minutes=lookahead),
        timedelta(minutes=5),
        limit,
    )
    assert plan == OccurrencePlan(
        make=minutes(*make),
        missed=missed,
        next_at=None if following is None else T10 + timedelta(minutes=following),
    )


def test_passes_limited_to_a_few_calls_carry_on_to_the_same_calls_as_one_pass() -> None:
    rec = recurrence("*/10 * * * *")
    now = T10 + timedelta(minutes=42)
    args = (now, timedelta(minutes=1), timedelta(minutes=5))
    whole = plan_occurrences(rec, FIRE_ALL, T10, *args, limit=100)
    made: list[datetime] = []
    next_at: datetime | None = T10
    while next_at is not None and next_at <= now + timedelta(minutes=1):
        plan = plan_occurrences(rec, FIRE_ALL, next_at, *args, limit=2)
        made.extend(plan.make)
        next_at = plan.next_at
    assert tuple(made) == whole.make
    assert next_at == whole.next_at == T10 + timedelta(minutes=50)


def test_an_ended_recurrence_plans_its_last_occurrences_and_no_next() -> None:
    rec = recurrence("*/10 * * * *", end_at=T10 + timedelta(minutes=25))
    now = T10 + timedelta(hours=1)
    args = (now, timedelta(minutes=1), timedelta(minutes=5), 10)
    assert plan_occurrences(rec, FIRE_ALL, T10, *args) == OccurrencePlan(
        make=minutes(0, 10, 20), missed=0, next_at=None
    )
    assert plan_occurrences(rec, FIRE_LATEST, T10, *args) == OccurrencePlan(
        make=minutes(20), missed=2, next_at=None
    )
    assert plan_occurrences(rec, SKIP, T10, *args) == OccurrencePlan(
        make=(), missed=3, next_at=None
    )
    # On time, up to the end.
    assert plan_occurrences(
        rec, FIRE_LATEST, T10 + timedelta(minutes=20), T10 + timedelta(minutes=20), *args[1:]
    ) == OccurrencePlan(make=minutes(20), missed=0, next_at=None)
    assert plan_occurrences(rec, FIRE_LATEST, T10 + timedelta(minutes=30), now, *args[1:]) == (
        OccurrencePlan(make=(), missed=0, next_at=None)
    )


def test_the_limit_must_allow_a_call() -> None:
    with pytest.raises(ValueError, match="limit"):
        plan_occurrences(recurrence("@daily"), SKIP, T10, T10, timedelta(0), timedelta(0), 0)


class CountingCroniter:
    """croniter, counting the steps taken, to show a pass does not walk an outage."""

    steps = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._inner = croniter(*args, **kwargs)

    @property
    def expanded(self) -> Any:
        return self._inner.expanded

    def get_next(self, *args: Any) -> Any:
        CountingCroniter.steps += 1
        return self._inner.get_next(*args)

    def get_prev(self, *args: Any) -> Any:
        CountingCroniter.steps += 1
        return self._inner.get_prev(*args)


YEAR_START = at("2025-01-01T00:00Z")
YEAR_END = at("2026-01-01T00:00Z")
MINUTES_IN_2025 = 365 * 24 * 60


# After a year without a pass, for `* * * * *` in UTC, missed after 5 minutes, a minute of
# lookahead: 525,595 occurrences were missed (up to 23:54), 23:55..00:01 are in the window.
# (policy, limit, calls made, the first of them, missed, next_at).
YEAR_OUTAGE = [
    (FIRE_LATEST, 100, 8, "2025-12-31T23:54Z", MINUTES_IN_2025 - 6, "2026-01-01T00:02Z"),
    (SKIP, 100, 7, "2025-12-31T23:55Z", MINUTES_IN_2025 - 5, "2026-01-01T00:02Z"),
    (
        FIRE_ALL,
        2000,
        MAX_MISSED_FIRED + 7,
        "2025-12-31T07:15Z",  # 1,000 minutes before 23:55
        MINUTES_IN_2025 - 5 - MAX_MISSED_FIRED,
        "2026-01-01T00:02Z",
    ),
    (FIRE_ALL, 100, 100, "2025-12-31T07:15Z", MINUTES_IN_2025 - 5 - 1000, "2025-12-31T08:55Z"),
]


@pytest.mark.parametrize(("policy", "limit", "made", "first", "missed", "following"), YEAR_OUTAGE)
def test_a_year_long_outage_is_planned_without_walking_it(
    monkeypatch: pytest.MonkeyPatch,
    policy: MissedOccurrencePolicy,
    limit: int,
    made: int,
    first: str,
    missed: int,
    following: str,
) -> None:
    monkeypatch.setattr(schedules, "croniter", CountingCroniter)
    CountingCroniter.steps = 0
    schedules._rule.cache_clear()
    plan = plan_occurrences(
        recurrence("* * * * *"),
        policy,
        YEAR_START,
        YEAR_END,
        timedelta(minutes=1),
        timedelta(minutes=5),
        limit,
    )
    assert len(plan.make) == made
    assert plan.make[0] == at(first)
    assert list(plan.make) == sorted(set(plan.make))
    assert plan.missed == missed
    assert plan.next_at == at(following)
    # Walking the year would take half a million steps.
    assert CountingCroniter.steps < MAX_MISSED_FIRED + 100


def test_a_year_long_outage_across_daylight_saving_counts_each_instant_once() -> None:
    # Paris in 2025: the repeated hour of 26 October fires once, so 60 minutes fewer.
    plan = plan_occurrences(
        recurrence("* * * * *", "Europe/Paris"),
        SKIP,
        YEAR_START,
        YEAR_END,
        timedelta(0),
        timedelta(0),
        10,
    )
    assert plan.missed == MINUTES_IN_2025 - 60
    weekdays = plan_occurrences(
        recurrence("*/15 9-17 * * 1-5", "America/New_York"),
        SKIP,
        YEAR_START,
        YEAR_END,
        timedelta(0),
        timedelta(0),
        10,
    )
    assert weekdays.missed == 261 * 9 * 4  # 261 weekdays in 2025, 9 hours, 4 a hour


def test_a_decade_of_every_second_is_counted() -> None:
    rec = recurrence("@every 1s", anchor=YEAR_START)
    now = YEAR_START + timedelta(days=3653)
    plan = plan_occurrences(rec, FIRE_LATEST, YEAR_START, now, timedelta(0), timedelta(0), 5)
    assert plan.make == (now - timedelta(seconds=1), now)
    assert plan.missed == 3653 * 86400 - 1
    assert plan.next_at == now + timedelta(seconds=1)


# --- Refusals --------------------------------------------------------------------------------

NAIVE = datetime(2026, 1, 2)

# (cron, time zone, start, end, the fields refused).
INVALID = [
    ("", "UTC", None, None, {"schedule.cron"}),
    ("   ", "UTC", None, None, {"schedule.cron"}),
    ("0 0 * * * *", "UTC", None, None, {"schedule.cron"}),  # seconds
    ("0 0 0 * * * 2026", "UTC", None, None, {"schedule.cron"}),  # seconds and years
    ("0 0 * *", "UTC", None, None, {"schedule.cron"}),
    ("@reboot", "UTC", None, None, {"schedule.cron"}),
    ("@daily 5", "UTC", None, None, {"schedule.cron"}),
    ("60 * * * *", "UTC", None, None, {"schedule.cron"}),
    ("0 24 * * *", "UTC", None, None, {"schedule.cron"}),
    ("0 0 0 * *", "UTC", None, None, {"schedule.cron"}),
    ("0 0 * 13 *", "UTC", None, None, {"schedule.cron"}),
    ("0 0 * * 8", "UTC", None, None, {"schedule.cron"}),
    ("0 0 * FOO *", "UTC", None, None, {"schedule.cron"}),
    ("0 0 * * JAN", "UTC", None, None, {"schedule.cron"}),
    ("0 0 L * *", "UTC", None, None, {"schedule.cron"}),
    ("0 0 15W * *", "UTC", None, None, {"schedule.cron"}),
    ("0 0 * * 5#3", "UTC", None, None, {"schedule.cron"}),
    ("0 0 ? * *", "UTC", None, None, {"schedule.cron"}),
    ("H * * * *", "UTC", None, None, {"schedule.cron"}),
    ("R * * * *", "UTC", None, None, {"schedule.cron"}),
    ("5/15 * * * *", "UTC", None, None, {"schedule.cron"}),
    ("*/0 * * * *", "UTC", None, None, {"schedule.cron"}),
    ("10-5 * * * *", "UTC", None, None, {"schedule.cron"}),
    ("1,,2 * * * *", "UTC", None, None, {"schedule.cron"}),
    ("0 0 30 2 *", "UTC", None, None, {"schedule.cron"}),  # never occurs
    ("0 0 31 4,6 *", "UTC", None, None, {"schedule.cron"}),
    ("@every", "UTC", None, None, {"schedule.cron"}),
    ("@every 0s", "UTC", None, None, {"schedule.cron"}),
    ("@every 500ms", "UTC", None, None, {"schedule.cron"}),
    ("@every 1.5s", "UTC", None, None, {"schedule.cron"}),
    ("@every -1s", "UTC", None, None, {"schedule.cron"}),
    ("@every 1d", "UTC", None, None, {"schedule.cron"}),
    ("@every 8785h", "UTC", None, None, {"schedule.cron"}),
    ("@every 1h 30m", "UTC", None, None, {"schedule.cron"}),
    ("@every 10ns", "UTC", None, None, {"schedule.cron"}),
    ("@daily", "Mars/Olympus", None, None, {"schedule.time_zone"}),
    ("@daily", "localtime", None, None, {"schedule.time_zone"}),
    ("@daily", "../../etc/passwd", None, None, {"schedule.time_zone"}),
    ("@daily", "/usr/share/zoneinfo/UTC", None, None, {"schedule.time_zone"}),
    ("@daily", "europe/paris", None, None, {"schedule.time_zone"}),
    ("@daily", "UTC", NAIVE, None, {"schedule.start_time"}),
    ("@daily", "UTC", None, NAIVE, {"schedule.end_time"}),
    ("@daily", "UTC", T10, T10, {"schedule.end_time"}),
    ("@daily", "UTC", T10, T10 - timedelta(seconds=1), {"schedule.end_time"}),
    # Without a start, the end must follow the schedule's creation (the anchor).
    ("@daily", "UTC", None, ANCHOR, {"schedule.end_time"}),
    (
        "* * *",
        "Nowhere/Zone",
        NAIVE,
        NAIVE,
        {"schedule.cron", "schedule.time_zone", "schedule.start_time", "schedule.end_time"},
    ),
]


@pytest.mark.parametrize(("cron", "time_zone", "start", "end", "fields"), INVALID)
def test_invalid_recurrences_name_every_bad_field(
    cron: str, time_zone: str, start: datetime | None, end: datetime | None, fields: set[str]
) -> None:
    violations = parse_recurrence(cron, time_zone, start, end, ANCHOR)
    assert isinstance(violations, list)
    assert [v.field for v in violations] == sorted(
        fields,
        key=[
            "schedule.cron",
            "schedule.time_zone",
            "schedule.start_time",
            "schedule.end_time",
        ].index,
    )
    assert all(v.description for v in violations)


def test_cron_refusals_say_what_is_accepted() -> None:
    [six] = parse_recurrence("0 0 * * * *", "UTC", None, None, ANCHOR)  # type: ignore[misc]
    assert "5-field" in six.description and "@every" in six.description
    [never] = parse_recurrence("0 0 30 2 *", "UTC", None, None, ANCHOR)  # type: ignore[misc]
    assert "never occurs" in never.description
    [short] = parse_recurrence("@every 0s", "UTC", None, None, ANCHOR)  # type: ignore[misc]
    assert "1s" in short.description
    [zone] = parse_recurrence("@daily", "Mars/Olympus", None, None, ANCHOR)  # type: ignore[misc]
    assert "IANA" in zone.description and "Mars/Olympus" in zone.description


VALID = [
    "*/5 * * * *",
    "0 9 * jan,JUL mon-fri",
    "0-30/10 8-18/2 1,15 * *",
    "0 0 1-7 * 1",
    "59 23 31 12 7",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "@every 1s",
    "@every 1h30m",
    "@every 1.5h",
    "@every 1000ms",
    "@every 8784h",
]


@pytest.mark.parametrize("cron", VALID)
def test_valid_recurrences_are_kept_as_given(cron: str) -> None:
    rec = parse_recurrence(cron, "Europe/Paris", T10, T10 + timedelta(days=400), T10)
    assert rec == Recurrence(cron, "Europe/Paris", T10, T10 + timedelta(days=400), T10)
    assert next_occurrence(rec, T10) is not None


@pytest.mark.parametrize(
    ("schedule_id", "valid"),
    [
        ("nightly-report", True),
        ("0", True),
        ("a" * 63, True),
        ("0190f2c4-7a3e-7b6c-9d1e-2f3a4b5c6d7e", True),  # a UUIDv7
        ("", False),
        ("-nightly", False),
        ("Nightly", False),
        ("nightly_report", False),
        ("nightly report", False),
        ("a" * 64, False),
    ],
)
def test_schedule_id(schedule_id: str, valid: bool) -> None:
    violations = validate_schedule_id(schedule_id)
    assert (violations == []) is valid
    assert all(v.field == "schedule.schedule_id" for v in violations)


def test_description() -> None:
    assert validate_description("") == []
    assert validate_description("é" * 1000) == []
    [violation] = validate_description("x" * 1001)
    assert violation.field == "schedule.description"


# --- Properties ------------------------------------------------------------------------------

# Each zone's 2026 offset changes, where the interesting occurrences are.
CHANGES = {
    "UTC": [at("2026-03-08T07:00Z")],
    "Europe/Paris": [at("2026-03-29T01:00Z"), at("2026-10-25T01:00Z")],
    "America/New_York": [at("2026-03-08T07:00Z"), at("2026-11-01T06:00Z")],
    "Australia/Lord_Howe": [at("2026-04-04T15:00Z"), at("2026-10-03T15:30Z")],
}
CRONS = [
    "* * * * *",
    "*/15 * * * *",
    "*/7 * * * *",
    "30 2 * * *",
    "0 * * * *",
    "30 1 * * *",
    "0,30 1-3 * * *",
    "45 2 * * 0",
    "15,45 0-4 * * 6,0",
    "59 1 * * *",
]


def oracle(cron: str, zone: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """The occurrences in (after, until) by looking at every minute: an instant fires when its
    wall time matches and is that wall time's first instant, or when a gap ends at it and a
    wall time it skipped (or its own) matches."""
    found = []
    instant = after.replace(second=0, microsecond=0)
    while instant < until:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None)
        before = (instant - timedelta(seconds=1)).astimezone(zone).utcoffset()
        offset = local.utcoffset()
        assert before is not None and offset is not None
        if offset > before:
            gap_minutes = int((offset - before).total_seconds() // 60)
            walls = [wall - timedelta(minutes=k) for k in range(gap_minutes + 1)]
        else:
            walls = [wall] if local.fold == 0 else []
        if instant > after and any(croniter.match(cron, w.replace(tzinfo=UTC)) for w in walls):
            found.append(instant)
        instant += timedelta(minutes=1)
    return found


@settings(max_examples=60, deadline=None)
@given(
    cron=st.sampled_from(CRONS),
    zone_and_change=st.sampled_from([(zone, c) for zone, cs in CHANGES.items() for c in cs]),
    shift=st.integers(min_value=-4 * 3600, max_value=2 * 3600),
    microsecond=st.sampled_from([0, 1, 500_000]),
)
def test_occurrences_match_a_minute_by_minute_oracle(
    cron: str, zone_and_change: tuple[str, datetime], shift: int, microsecond: int
) -> None:
    zone_name, change = zone_and_change
    after = change + timedelta(seconds=shift, microseconds=microsecond)
    until = after + timedelta(hours=6)
    rec = recurrence(cron, zone_name)
    expected = oracle(cron, ZoneInfo(zone_name), after, until)

    walked: list[datetime] = []
    cursor = after
    while (found := next_occurrence(rec, cursor)) is not None and found < until:
        walked.append(found)
        cursor = found
    assert walked == expected

    # Counting without walking gives the same number; so does the latest missed occurrence.
    start = after + timedelta(microseconds=1)
    plan = plan_occurrences(rec, FIRE_LATEST, start, until, timedelta(0), timedelta(0), 1)
    if expected:
        assert plan.make == (expected[-1],)
        assert plan.missed == len(expected) - 1
    skip = plan_occurrences(rec, SKIP, start, until, timedelta(0), timedelta(0), 1)
    assert skip.missed == len(expected)
    every = plan_occurrences(rec, FIRE_ALL, start, until, timedelta(0), timedelta(0), 1000)
    assert [o for o in every.make if o < until] == expected
