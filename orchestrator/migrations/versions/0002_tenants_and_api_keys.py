"""Tenants and their API keys (stored hashed).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE orchestrator.tenants (
            tenant_id   text        PRIMARY KEY,
            created_at  timestamptz NOT NULL DEFAULT now()
        );
        -- A key is shown once, at creation; only a SHA-256 of its secret part is kept. Keys are
        -- 256-bit random values, so a fast hash is enough (no dictionary to guess from).
        CREATE TABLE orchestrator.api_keys (
            key_id      text        PRIMARY KEY,
            tenant_id   text        NOT NULL REFERENCES orchestrator.tenants (tenant_id),
            secret_hash bytea       NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            revoked_at  timestamptz
        );
        CREATE INDEX api_keys_by_tenant ON orchestrator.api_keys (tenant_id);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE orchestrator.api_keys; DROP TABLE orchestrator.tenants;")
