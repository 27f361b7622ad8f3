"""Durable timers.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE scheduler.timers (
            timer_id         uuid        PRIMARY KEY,
            tenant_id        text        NOT NULL,
            service_call_id  text        NOT NULL,
            purpose          smallint    NOT NULL,
            attempt          integer     NOT NULL,
            fire_at          timestamptz NOT NULL,
            state            text        NOT NULL,
            armed_by         text        NOT NULL,
            correlation_id   text        NOT NULL,
            sequence         bigint      NOT NULL,
            -- A claim is a lease: a replica that claimed and died is replaced after it.
            claimed_until    timestamptz,
            fired_at         timestamptz,
            created_at       timestamptz NOT NULL DEFAULT now()
        );
        -- Only pending timers are ever searched by time, so the index holds just those and
        -- stays small however many timers have fired.
        CREATE INDEX timers_pending_by_fire_at
            ON scheduler.timers (fire_at) WHERE state = 'pending';
        CREATE INDEX timers_fired_at ON scheduler.timers (fired_at) WHERE state <> 'pending';
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE scheduler.timers")
