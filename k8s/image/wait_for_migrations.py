"""Init container: waits until each named service's schema is at this image's newest migration.

    python k8s/image/wait_for_migrations.py orchestrator [scheduler ...] [--timeout 300]

The migration Job (k8s/base/migrate-job.yaml) is the only thing that changes schemas; a
Deployment waits here so that its code never serves against an older schema than it expects.
Exits 1 after the timeout, so a stuck migration shows as a failing init container.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mesh.db import sqlalchemy_url

APP = Path(__file__).resolve().parents[2]


def newest_revisions(service: str) -> set[str]:
    config = Config()
    config.set_main_option("script_location", str(APP / service / "migrations"))
    return set(ScriptDirectory.from_config(config).get_heads())


def current_revisions(engine: sa.Engine, schema: str) -> set[str]:
    """What the database is at; empty while the schema or its version table is missing."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
        return set(context.get_current_heads())


def wait(database_url: str, services: list[str], timeout: float, interval: float = 2.0) -> bool:
    wanted = {service: newest_revisions(service) for service in services}
    engine = sa.create_engine(sqlalchemy_url(database_url), poolclass=sa.NullPool)
    deadline = time.monotonic() + timeout
    try:
        while True:
            pending: dict[str, str] = {}
            for service, revisions in wanted.items():
                try:
                    current = current_revisions(engine, service)
                except sa.exc.SQLAlchemyError as e:
                    pending[service] = f"database not reachable ({type(e).__name__})"
                    continue
                if current != revisions:
                    at = sorted(current) or "nothing"
                    pending[service] = f"at {at}, want {sorted(revisions)}"
            if not pending:
                print(f"schemas at the newest migration: {', '.join(services)}", flush=True)
                return True
            if time.monotonic() >= deadline:
                print(f"gave up waiting for migrations: {pending}", file=sys.stderr, flush=True)
                return False
            print(f"waiting for the migration job: {pending}", flush=True)
            time.sleep(interval)
    finally:
        engine.dispose()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("services", nargs="+", choices=["orchestrator", "scheduler"])
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        raise SystemExit("DATABASE_URL must be set")
    raise SystemExit(0 if wait(database_url, args.services, args.timeout) else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
