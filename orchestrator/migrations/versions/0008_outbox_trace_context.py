"""Outbox rows carry the W3C trace context of the request that wrote them.

Revision ID: 0008
Revises: 0007

The relay puts it on the Kafka message's headers (docs/tracing.md), so a call's trace goes on
through the scheduler and the executor to the target's `traceparent`. Nullable, no default:
adding it rewrites nothing, and rows written before it (or without a trace) stay NULL and are
published without headers, as before.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE orchestrator.outbox ADD COLUMN IF NOT EXISTS trace_context jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE orchestrator.outbox DROP COLUMN IF EXISTS trace_context")
