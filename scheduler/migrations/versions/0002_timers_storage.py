"""Timers table storage: room for HOT updates, earlier autovacuum.

Revision ID: 0002
Revises: 0001

A timer row is written three times in its life (armed, claimed, fired) and deleted an hour
later. The claim only sets `claimed_until`, which no index covers, so with free space on the
page Postgres updates it in place (HOT) without touching an index; fillfactor 80 keeps that
space. A queue table churns its whole content continually, so the default trigger (20% of the
table dead) lets a 1M-row table carry 200k dead rows before a vacuum; 2% keeps the partial
index on pending timers, which every claim scans, small.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE scheduler.timers SET (
            fillfactor = 80,
            autovacuum_vacuum_scale_factor = 0.02,
            autovacuum_vacuum_insert_scale_factor = 0.05,
            autovacuum_analyze_scale_factor = 0.02
        );
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE scheduler.timers RESET (
            fillfactor,
            autovacuum_vacuum_scale_factor,
            autovacuum_vacuum_insert_scale_factor,
            autovacuum_analyze_scale_factor
        );
        """
    )
