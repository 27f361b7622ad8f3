"""scheduler/adapters/tables.py describes the table the migrations create, column for column."""

from __future__ import annotations

import psycopg
from sqlalchemy.dialects import postgresql

from scheduler.adapters.tables import timers


def test_the_timers_table_matches_the_migrations(template_database: str) -> None:
    with psycopg.connect(template_database) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns"
            " WHERE table_schema = 'scheduler' AND table_name = 'timers' ORDER BY column_name"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'scheduler'"
            " AND tablename = 'timers' AND indexname <> 'timers_pkey' ORDER BY indexname"
        ).fetchall()
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    described = sorted(
        (c.name, c.type.compile(dialect=dialect).lower(), c.nullable) for c in timers.columns
    )
    assert [tuple(row) for row in columns] == described
    assert [row[0] for row in indexes] == sorted(str(i.name) for i in timers.indexes)
