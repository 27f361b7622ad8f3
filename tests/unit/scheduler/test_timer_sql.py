"""The scheduler's Core statements say what the hand-written SQL said (scheduler/adapters/).

Compiled as the psycopg dialect sends them: the states stay literals (the partial indexes on
`state = 'pending'` must be visible in every plan, generic ones included), the claim locks with
SKIP LOCKED, and arming batches through one JSON document with its conflict guard."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.sql import ClauseElement

from scheduler.adapters import metrics, store

DIALECT = psycopg.dialect()  # type: ignore[no-untyped-call]


def sql(statement: ClauseElement) -> str:
    return re.sub(r"\s+", " ", str(statement.compile(dialect=DIALECT)))


STATEMENTS = {
    name: getattr(store, name)
    for name in (
        "_ARM_MANY",
        "_CLAIM",
        "_MARK_FIRED",
        "_NEXT",
        "_UPCOMING",
        "_CANCEL",
        "_GET",
        "_LIST_FIRST",
        "_LIST_AFTER",
        "_PRUNE",
    )
} | {"_PENDING": metrics._PENDING}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_states_are_literals_never_parameters(name: str) -> None:
    text = sql(STATEMENTS[name])
    assert "state = %(" not in text and "state != %(" not in text
    assert "state=%(" not in text


def test_the_claim_takes_the_earliest_due_rows_no_one_holds() -> None:
    text = sql(store._CLAIM)
    assert text.startswith("UPDATE scheduler.timers AS t SET claimed_until=%(lease_until)s")
    assert "FROM (SELECT scheduler.timers.timer_id AS timer_id FROM scheduler.timers WHERE" in text
    assert "scheduler.timers.state = 'pending'" in text
    assert "OR scheduler.timers.purpose = 1)" in text
    assert "(scheduler.timers.claimed_until IS NULL OR scheduler.timers.claimed_until <=" in text
    assert (
        "ORDER BY scheduler.timers.fire_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS due" in text
    )
    assert "WHERE t.timer_id = due.timer_id RETURNING CAST(t.timer_id AS TEXT) AS timer_id" in text


def test_arming_is_one_upsert_of_a_json_batch_that_rearms_only_fired_timers() -> None:
    text = sql(store._ARM_MANY)
    assert "FROM jsonb_to_recordset(CAST(%(timers)s AS JSONB)) AS t(timer_id UUID," in text
    assert "ON CONFLICT (timer_id) DO UPDATE SET state = 'pending'" in text
    assert "claimed_until = NULL, fired_at = NULL" in text
    assert (
        "WHERE scheduler.timers.state = 'fired'"
        " AND scheduler.timers.armed_by != excluded.armed_by"
        " RETURNING CAST(scheduler.timers.timer_id AS TEXT) AS timer_id"
    ) in text


def test_only_the_claims_holder_marks_its_timers_fired() -> None:
    text = sql(store._MARK_FIRED)
    assert "timer_id = ANY (CAST(%(ids)s AS UUID[]))" in text
    assert "scheduler.timers.claimed_until = %(claim_ends)s" in text


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("_CLAIM", ["now", "handoffs_until", "limit", "lease_until"]),
        ("_MARK_FIRED", ["ids", "now", "claim_ends"]),
        ("_CANCEL", ["id", "now"]),
    ],
)
def test_an_updates_parameters_add_nothing_to_what_it_sets(name: str, keys: list[str]) -> None:
    # Executed with a key named after a column, SQLAlchemy would SET that column too.
    statement = STATEMENTS[name]
    executed = str(statement.compile(dialect=DIALECT, column_keys=keys))
    assert re.sub(r"\s+", " ", executed) == sql(statement)
