"""Alembic environment for the scheduler's schema."""

from alembic import context

from mesh.db import run_alembic_env

run_alembic_env(context)
