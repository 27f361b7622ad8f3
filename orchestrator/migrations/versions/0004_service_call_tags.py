"""Tags of each call in a table of their own, keyed for tag-filtered listing by creation time.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE orchestrator.service_call_tags (
            tenant_id        text        NOT NULL,
            tag              text        NOT NULL,
            created_at       timestamptz NOT NULL,
            service_call_id  uuid        NOT NULL,
            PRIMARY KEY (tenant_id, tag, created_at, service_call_id)
        );
        INSERT INTO orchestrator.service_call_tags (tenant_id, tag, created_at, service_call_id)
        SELECT tenant_id, unnest(tags), created_at, service_call_id
          FROM orchestrator.service_calls;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE orchestrator.service_call_tags")
