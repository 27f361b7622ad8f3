"""schedules: recurring calls (#17, ScheduleService).

Revision ID: 0009
Revises: 0008

One row per schedule, keyed like the calls by tenant. The materialiser claims the ACTIVE
schedules whose next occurrence is due (`next_occurrence_at <= now + lookahead ... FOR UPDATE
SKIP LOCKED`): the partial index holds only those, so a pass reads a few index entries
however many schedules are paused or ended. `template` is the call template as a versioned
JSON document (orchestrator/adapters/schedules.py), its secret headers sealed. A new table:
nothing existing is rewritten, and a release without schedules ignores it.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE orchestrator.schedules (
            tenant_id           text        NOT NULL,
            schedule_id         text        NOT NULL,
            cron                text        NOT NULL,
            time_zone           text        NOT NULL,
            start_at            timestamptz,
            end_at              timestamptz,
            anchor_at           timestamptz NOT NULL,
            missed_policy       text        NOT NULL,
            description         text        NOT NULL,
            state               text        NOT NULL,
            next_occurrence_at  timestamptz,
            last_occurrence_at  timestamptz,
            version             bigint      NOT NULL,
            created_at          timestamptz NOT NULL,
            updated_at          timestamptz NOT NULL,
            template            jsonb       NOT NULL,
            PRIMARY KEY (tenant_id, schedule_id)
        );
        CREATE INDEX schedules_due
            ON orchestrator.schedules (next_occurrence_at) WHERE state = 'ACTIVE';
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE orchestrator.schedules")
