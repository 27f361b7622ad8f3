"""Timers keep the W3C trace context of the request that armed them.

Revision ID: 0003
Revises: 0002

A timer may fire long after it was armed, in another process; its DueTimeReached carries the
stored context on its Kafka headers, so the fire continues the call's trace (docs/tracing.md).
Nullable, no default: adding it rewrites nothing, and timers armed before it fire spanless.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE scheduler.timers ADD COLUMN IF NOT EXISTS trace_context jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE scheduler.timers DROP COLUMN IF EXISTS trace_context")
