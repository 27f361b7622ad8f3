"""Postgres plumbing shared by the services: engines and versioned migrations (alembic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def sqlalchemy_url(database_url: str) -> str:
    """The operator writes a plain libpq URL; SQLAlchemy needs the psycopg 3 driver named."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError(f"not a postgres URL: {database_url!r}")


def libpq_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def make_engine(database_url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # An error's text (logged, sometimes returned) would otherwise end with every bound
        # parameter: request bodies and headers, sealed or not, of whichever call failed.
        hide_parameters=True,
    )


def migrate(database_url: str, migrations_dir: Path, schema: str) -> None:
    """Brings one service's schema to the newest revision; safe to run again."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["url"] = sqlalchemy_url(database_url)
    config.attributes["schema"] = schema
    command.upgrade(config, "head")


def run_alembic_env(context: Any) -> None:
    """Body of every service's migrations/env.py: online migrations in the service's schema,
    with the version table inside that schema so services migrate independently."""
    config = context.config
    schema: str = config.attributes["schema"]
    engine = sa.create_engine(config.attributes["url"], poolclass=sa.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        connection.commit()
        context.configure(
            connection=connection,
            version_table_schema=schema,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
