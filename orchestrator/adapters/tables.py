"""SQLAlchemy Core descriptions of the orchestrator's tables (created by migrations/)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData(schema="orchestrator")

service_calls = sa.Table(
    "service_calls",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("service_call_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("due_at", sa.DateTime(timezone=True)),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("tags", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("state", pg.JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
    # When the orchestrator's own watchdog must look at the call: the dispatch lease of a
    # Dispatched call, the attempt deadline of a Running one, else NULL (migration 0005).
    sa.Column("watchdog_at", sa.DateTime(timezone=True)),
    # #18 (migration 0010): the call's queue and ordering key (immutable, written on insert),
    # and why it is held by its queue (NULL unless held; derived from the state).
    sa.Column("queue_id", sa.Text, nullable=False, server_default="default"),
    sa.Column("ordering_key", sa.Text),
    sa.Column("held_reason", sa.Text),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    # W3C trace context of the request that wrote the row, for the relay (migration 0008).
    sa.Column("trace_context", pg.JSONB(none_as_null=True)),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

# One row per (call, tag), ordered like the creation-time listing: a tag-filtered page is a
# range read of the primary key whatever the tag's selectivity (a GIN filter over a tenant's
# created_at order scanned 1M rows for a tag nobody had). Tags never change after submit.
service_call_tags = sa.Table(
    "service_call_tags",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("tag", sa.Text, primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("service_call_id", pg.UUID(as_uuid=False), primary_key=True),
)

# Messages and outbox rows that could not be handled after bounded tries (migration 0006).
parked_messages = sa.Table(
    "parked_messages",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("kafka_partition", sa.Integer),
    sa.Column("kafka_offset", sa.BigInteger),
    sa.Column("outbox_id", sa.BigInteger),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("tenant_id", sa.Text),
    sa.Column("service_call_id", sa.Text),
    sa.Column("parked_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("replayed_at", sa.DateTime(timezone=True)),
)

# Tenants and their API keys, only a hash of a key's secret kept (migration 0002).
tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey(tenants.c.tenant_id), nullable=False, index=True),
    sa.Column("secret_hash", sa.LargeBinary, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

# Schedules (#17, migration 0009): one row per schedule; the recurrence in columns as given,
# the call template as a versioned JSON document (adapters/schedules.py) with its secret
# headers sealed to the schedule.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("schedule_id", sa.Text, primary_key=True),
    sa.Column("cron", sa.Text, nullable=False),
    sa.Column("time_zone", sa.Text, nullable=False),
    sa.Column("start_at", sa.DateTime(timezone=True)),
    sa.Column("end_at", sa.DateTime(timezone=True)),
    # What `@every` counts from: the start time, or the schedule's creation.
    sa.Column("anchor_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("missed_policy", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("next_occurrence_at", sa.DateTime(timezone=True)),
    sa.Column("last_occurrence_at", sa.DateTime(timezone=True)),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("template", pg.JSONB, nullable=False),
)

# Queues (#18, migration 0010): one row per queue ever changed (`default` has none until then),
# with the rate limiter's state (`tat`) kept by the dispatcher that holds the row.
queues = sa.Table(
    "queues",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("queue_id", sa.Text, primary_key=True),
    sa.Column("max_dispatches_per_second", sa.Float, nullable=False),
    sa.Column("max_burst_size", sa.Integer, nullable=False),
    sa.Column("max_concurrent_dispatches", sa.Integer, nullable=False),
    sa.Column("ordering_failure_policy", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("tat", sa.DateTime(timezone=True)),
)
