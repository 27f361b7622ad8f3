"""The orchestrator's named SQL statements keep the clauses their guarantees rest on, and the
adapters write SQL one way: SQLAlchemy Core, no SQL text (see docs/architecture.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg

from orchestrator.adapters import parking, relay, store, tenants
from orchestrator.adapters.driver_sql import DriverStatement

# The dialect the services run with (psycopg 3), so binds render as they are sent.
DIALECT = psycopg.dialect()  # type: ignore[no-untyped-call]
ADAPTERS = Path(__file__).resolve().parents[3] / "orchestrator" / "adapters"


def sql(statement: sa.ClauseElement) -> str:
    return re.sub(r"\s+", " ", str(statement.compile(dialect=DIALECT)))


def test_the_relay_reads_every_unpublished_row_in_id_order() -> None:
    text = sql(relay._PENDING)
    assert "WHERE orchestrator.outbox.published_at IS NULL" in text
    assert text.endswith("ORDER BY orchestrator.outbox.id LIMIT %(limit)s")


def test_the_relay_leader_lock_is_the_same_session_lock() -> None:
    # Replicas of older releases take the same key: one leader across a rolling upgrade.
    assert relay._LEADER_LOCK == 0x5E_0001
    assert "pg_try_advisory_lock(%(key)s::BIGINT)" in sql(relay._TRY_LEAD)


@pytest.mark.parametrize("statement", [relay._PRUNE_OUTBOX, relay._PRUNE_INBOX])
def test_pruning_is_a_bounded_delete(statement: sa.Delete) -> None:
    text = sql(statement)
    # The subquery reads the table itself (not correlated away) and is limited.
    assert re.fullmatch(
        r"DELETE FROM (orchestrator\.\w+) WHERE \1\.\w+ IN \(SELECT \1\.\w+ FROM \1 WHERE .*"
        r" LIMIT %\(limit\)s\)",
        text,
    ), text


def test_the_group_commit_inserts_only_new_calls_and_their_rows_in_order() -> None:
    text = sql(store._INSERT_NEW_CALLS)
    assert 'FROM "new" ORDER BY "new".n ON CONFLICT DO NOTHING RETURNING' in text
    assert "tagged AS (INSERT INTO orchestrator.service_call_tags" in text
    assert "JOIN inserted AS i ON" in text and "ORDER BY m.n" in text
    assert "pg_notify(%(channel)s" in text
    assert set(store._INSERT_NEW_CALLS.compile(dialect=DIALECT).binds) >= {
        "calls",
        "messages",
        "channel",
    }


def test_the_backfill_touches_only_scheduled_calls_without_a_watchdog_time() -> None:
    text = sql(store._BACKFILL_SCHEDULED)
    assert "UPDATE orchestrator.service_calls AS s SET watchdog_at=" in text
    assert "s.watchdog_at IS NULL" in text
    assert "FROM page ORDER BY page.tenant_id DESC, service_call_id DESC" in text


def test_admin_statements_are_idempotent_where_the_cli_says_so() -> None:
    assert "ON CONFLICT DO NOTHING RETURNING" in sql(tenants._CREATE_TENANT)
    assert "revoked_at IS NULL RETURNING" in sql(tenants._REVOKE_KEY)
    assert "replayed_at IS NULL RETURNING" in sql(parking._MARK_REPLAYED)


@pytest.mark.parametrize("module", sorted(p.name for p in ADAPTERS.glob("*.py")))
def test_no_sql_text_in_the_adapters(module: str) -> None:
    source = (ADAPTERS / module).read_text()
    assert "sa.text(" not in source and "literal_column" not in source
    # SQL text only for LISTEN, the relay's notification stream (relay._PENDING_ON_DRIVER).
    raw = re.findall(r"""\.execute\(\s*f?["']([A-Z]+)""", source)
    assert raw in ([], ["LISTEN"]), raw


@pytest.mark.parametrize(
    ("statement", "on_driver"),
    [
        (store._INSERT_NEW_CALLS, store._INSERT_NEW_CALLS_ON_DRIVER),
        (relay._PENDING, relay._PENDING_ON_DRIVER),
        (relay._MARK_PUBLISHED, relay._MARK_PUBLISHED_ON_DRIVER),
        (relay._PRUNE_OUTBOX, relay._PRUNE_OUTBOX_ON_DRIVER),
        (relay._PRUNE_INBOX, relay._PRUNE_INBOX_ON_DRIVER),
        (relay._TRY_LEAD, relay._TRY_LEAD_ON_DRIVER),
    ],
)
def test_statements_run_on_the_driver_are_their_core_statements(
    statement: sa.ClauseElement, on_driver: DriverStatement
) -> None:
    compiled = statement.compile(dialect=DIALECT)
    assert on_driver.sql == compiled.string
    # Every parameter of the text has a value once the caller's are given: the constants
    # SQLAlchemy bound, and only those.
    names = set(re.findall(r"%\((\w+)\)s", on_driver.sql))
    given = {"calls", "messages", "channel", "limit", "ids", "older_than", "key"}
    assert names - given == set(on_driver.constants)
    assert on_driver.params({"limit": 5})["limit"] == 5
