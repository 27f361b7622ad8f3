"""Service calls, the transactional outbox and the consumer inbox.

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
        CREATE TABLE orchestrator.service_calls (
            tenant_id        text        NOT NULL,
            service_call_id  uuid        NOT NULL,
            status           text        NOT NULL,
            version          bigint      NOT NULL,
            due_at           timestamptz,
            attempt          integer     NOT NULL,
            tags             text[]      NOT NULL,
            idempotency_key  text,
            state            jsonb       NOT NULL,
            created_at       timestamptz NOT NULL,
            updated_at       timestamptz NOT NULL,
            completed_at     timestamptz,
            PRIMARY KEY (tenant_id, service_call_id)
        );
        -- Keyset pagination by creation or due time within a tenant.
        CREATE INDEX service_calls_by_created
            ON orchestrator.service_calls (tenant_id, created_at, service_call_id);
        CREATE INDEX service_calls_by_due
            ON orchestrator.service_calls (tenant_id, due_at, service_call_id);
        CREATE INDEX service_calls_by_tags
            ON orchestrator.service_calls USING gin (tags);

        -- Rows are written in the same transaction as the state change they announce; the
        -- relay publishes and marks them. Published rows are pruned after a retention period.
        CREATE TABLE orchestrator.outbox (
            id            bigserial   PRIMARY KEY,
            topic         text        NOT NULL,
            key           text        NOT NULL,
            payload       bytea       NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            published_at  timestamptz
        );
        CREATE INDEX outbox_unpublished ON orchestrator.outbox (id) WHERE published_at IS NULL;

        -- Event ids already applied: a redelivered Kafka message changes nothing.
        CREATE TABLE orchestrator.inbox (
            event_id     text        PRIMARY KEY,
            received_at  timestamptz NOT NULL DEFAULT now()
        );
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE orchestrator.inbox; DROP TABLE orchestrator.outbox;"
        " DROP TABLE orchestrator.service_calls;"
    )
