"""SQLAlchemy Core description of the scheduler's table (created by migrations/)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData(schema="scheduler")

timers = sa.Table(
    "timers",
    metadata,
    sa.Column("timer_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("service_call_id", sa.Text, nullable=False),
    sa.Column("purpose", sa.SmallInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("fire_at", sa.DateTime(timezone=True), nullable=False),
    # 'pending', 'fired' or 'canceled' (TimerState).
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("armed_by", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    # A claim is a lease: a replica that claimed and died is replaced after it.
    sa.Column("claimed_until", sa.DateTime(timezone=True)),
    sa.Column("fired_at", sa.DateTime(timezone=True)),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # W3C trace context of the request that armed the timer (migration 0003).
    sa.Column("trace_context", pg.JSONB),
)

# The states as SQL literals, never bound parameters: the partial indexes below are used only
# where the planner sees `state = 'pending'` in the statement itself, and psycopg prepares a
# statement after a few executions, whose generic plan knows nothing of a parameter's value.
PENDING = sa.literal_column("'pending'", sa.Text)
FIRED = sa.literal_column("'fired'", sa.Text)
CANCELED = sa.literal_column("'canceled'", sa.Text)

# Only pending timers are ever searched by time, so the index holds just those and stays small
# however many timers have fired (migration 0001).
sa.Index("timers_pending_by_fire_at", timers.c.fire_at, postgresql_where=timers.c.state == PENDING)
sa.Index("timers_fired_at", timers.c.fired_at, postgresql_where=timers.c.state != PENDING)
