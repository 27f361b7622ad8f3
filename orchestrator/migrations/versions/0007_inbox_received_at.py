"""An index on inbox.received_at, so pruning old event ids reads only the old ones.

Revision ID: 0007
Revises: 0006

The relay leader deletes inbox rows past INBOX_RETENTION_S in bounded batches
(orchestrator/adapters/relay.py); without this index each batch scans the whole inbox, which
holds one row per fact applied within the retention (millions on a busy mesh). Built
CONCURRENTLY so that writers (every applied fact inserts here) are not blocked meanwhile.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS inbox_received_at"
            " ON orchestrator.inbox (received_at)"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS orchestrator.inbox_received_at")
