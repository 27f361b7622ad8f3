"""queues: delivery control per queue and ordering keys (#18, QueueService).

Revision ID: 0010
Revises: 0009

- orchestrator.queues: one row per queue that was ever changed (the `default` queue exists
  without one). Besides its settings it keeps the rate limiter's state (`tat`, GCRA's
  theoretical arrival time, see orchestrator/domain/queues.py), written by the dispatcher
  that holds the row (FOR UPDATE SKIP LOCKED).
- service_calls gains the call's queue and ordering key (immutable, written on insert) and
  `held_reason` (set while the call is held by its queue, derived from the state like the
  other columns). A constant default and nullable columns: Postgres adds them without
  rewriting the table, and a release without queues writes rows that read as the default
  queue, no key, not held.
- Indexes: a queue's calls by status and due time (purge, the in-flight count, delete's
  check); an ordering key's unfinished calls by due time and its finished ones by completion
  (the dispatcher's sequencing); the held calls by queue and due time (partial: only held
  rows, so the dispatcher's scan is as small as the backlog).
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE orchestrator.queues (
            tenant_id                   text             NOT NULL,
            queue_id                    text             NOT NULL,
            max_dispatches_per_second   double precision NOT NULL,
            max_burst_size              integer          NOT NULL,
            max_concurrent_dispatches   integer          NOT NULL,
            ordering_failure_policy     text             NOT NULL,
            state                       text             NOT NULL,
            version                     bigint           NOT NULL,
            created_at                  timestamptz      NOT NULL,
            updated_at                  timestamptz      NOT NULL,
            tat                         timestamptz,
            PRIMARY KEY (tenant_id, queue_id)
        );
        ALTER TABLE orchestrator.service_calls
            ADD COLUMN queue_id text NOT NULL DEFAULT 'default',
            ADD COLUMN ordering_key text,
            ADD COLUMN held_reason text;
        CREATE INDEX service_calls_by_queue_status_due
            ON orchestrator.service_calls (tenant_id, queue_id, status, due_at, service_call_id);
        CREATE INDEX service_calls_by_key_due
            ON orchestrator.service_calls
               (tenant_id, queue_id, ordering_key, due_at, service_call_id)
            WHERE ordering_key IS NOT NULL
              AND status IN ('SCHEDULED', 'DISPATCHED', 'RUNNING');
        CREATE INDEX service_calls_by_key_completed
            ON orchestrator.service_calls (tenant_id, queue_id, ordering_key, completed_at)
            WHERE ordering_key IS NOT NULL AND status IN ('SUCCEEDED', 'FAILED');
        CREATE INDEX service_calls_held
            ON orchestrator.service_calls (tenant_id, queue_id, due_at, service_call_id)
            WHERE held_reason IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX orchestrator.service_calls_held;
        DROP INDEX orchestrator.service_calls_by_key_completed;
        DROP INDEX orchestrator.service_calls_by_key_due;
        DROP INDEX orchestrator.service_calls_by_queue_status_due;
        ALTER TABLE orchestrator.service_calls
            DROP COLUMN held_reason, DROP COLUMN ordering_key, DROP COLUMN queue_id;
        DROP TABLE orchestrator.queues;
        """
    )
