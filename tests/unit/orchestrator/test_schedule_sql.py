"""The schedule store's named statements keep the clauses its guarantees rest on: a claim
skips what another holds and reads only due ACTIVE schedules (the partial index's rows); a
client change locks the row and writes guarded by the version it read."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg

from orchestrator.adapters import schedules

DIALECT = psycopg.dialect()  # type: ignore[no-untyped-call]


def sql(statement: sa.ClauseElement) -> str:
    return re.sub(r"\s+", " ", str(statement.compile(dialect=DIALECT)))


def test_a_claim_takes_due_active_schedules_earliest_first_skipping_held_ones() -> None:
    text = sql(schedules._CLAIM_DUE)
    assert "orchestrator.schedules.state = %(state_1)s" in text
    assert "orchestrator.schedules.next_occurrence_at <= %(until)s" in text
    assert "ORDER BY orchestrator.schedules.next_occurrence_at" in text
    assert text.endswith("FOR UPDATE SKIP LOCKED")
    assert schedules._CLAIM_DUE.compile(dialect=DIALECT).params["state_1"] == "ACTIVE"


def test_a_change_locks_the_row_and_writes_guarded_by_its_version() -> None:
    assert sql(schedules._LOCK).endswith("FOR UPDATE")
    assert "orchestrator.schedules.version = %(b_version)s" in sql(schedules._WRITE)


def test_a_taken_id_is_not_overwritten() -> None:
    assert "ON CONFLICT DO NOTHING" in sql(schedules._CREATE)
