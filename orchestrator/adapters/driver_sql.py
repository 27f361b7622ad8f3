"""SQLAlchemy Core statements compiled once for psycopg, for the few hot statements that run
on a driver connection rather than through SQLAlchemy's execute.

Every statement is still written in Core next to its adapter (one way to write SQL); only
the execution differs, where it was measured to matter: SQLAlchemy's execute around a
statement (pool checkout, greenlet hops, result wrapping) costs ~0.1-0.3 ms of CPU, which is
as much as a lone submit's whole group commit or a relay batch of one row (issue #16).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.sql.compiler import SQLCompiler

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A Core statement as psycopg runs it: its text (pyformat parameters) and the values of
    the constants SQLAlchemy bound in it."""

    sql: str
    constants: Mapping[str, Any]

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.constants, **values}


def for_driver(statement: sa.ClauseElement) -> DriverStatement:
    compiled = cast(SQLCompiler, statement.compile(dialect=_DIALECT))
    constants = {
        name: bind.value for bind, name in compiled.bind_names.items() if not bind.required
    }
    return DriverStatement(compiled.string, constants)
