"""parked_messages: messages and outbox rows that could not be handled, kept for operators.

Revision ID: 0006
Revises: 0005

A Kafka message whose handler keeps failing for a reason other than an outage (it does not
decode, or applying it raises), or an outbox row the broker refuses, would otherwise block its
partition or the relay for every tenant. After a bounded number of tries it is copied here,
with the error and where it came from, and the partition or relay moves on. Operators list
and replay them (`python -m orchestrator admin parked ...`). `source` says which loop parked
it: `consumer:<group>` (topic, partition and offset set) or `outbox` (outbox_id set).
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE orchestrator.parked_messages (
            id               bigserial   PRIMARY KEY,
            source           text        NOT NULL,
            topic            text        NOT NULL,
            kafka_partition  integer,
            kafka_offset     bigint,
            outbox_id        bigint,
            key              text        NOT NULL,
            payload          bytea       NOT NULL,
            error            text        NOT NULL,
            tenant_id        text,
            service_call_id  text,
            parked_at        timestamptz NOT NULL DEFAULT now(),
            replayed_at      timestamptz
        );
        CREATE INDEX parked_messages_waiting
            ON orchestrator.parked_messages (parked_at) WHERE replayed_at IS NULL;
        -- One parked copy per message or row, however often parking it is retried.
        CREATE UNIQUE INDEX parked_messages_once_per_message
            ON orchestrator.parked_messages (source, topic, kafka_partition, kafka_offset)
            WHERE kafka_offset IS NOT NULL;
        CREATE UNIQUE INDEX parked_messages_once_per_outbox_row
            ON orchestrator.parked_messages (outbox_id) WHERE outbox_id IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE orchestrator.parked_messages")
