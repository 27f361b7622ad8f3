"""How fast a List page is for a tenant with many calls: `python -m bench.list_pages`.

Starts a Postgres of its own (fsync on), migrates it, seeds `--calls` Scheduled calls for one
tenant by COPY (bench/_seed.py), tags them all `common`, and times pages through the real
store adapter (medians of 5): by creation and due time, deep keyset pages, status and tag
filters (a status and a tag that no call has are the cases an index must make cheap).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench._seed import seed_pending
from mesh.db import make_engine, migrate
from orchestrator.adapters.store import PostgresServiceCallStore
from orchestrator.domain.states import Status
from orchestrator.main import MIGRATIONS as ORCHESTRATOR_MIGRATIONS
from orchestrator.ports import ListQuery
from scheduler.main import MIGRATIONS as SCHEDULER_MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]
TENANT = "bench-pending"  # the tenant bench/_seed.py seeds


def _postgres(command: str, run_dir: Path, port: int) -> None:
    env = {**os.environ, "PG_DIR": str(run_dir), "PG_PORT": str(port), "PG_FSYNC": "on"}
    subprocess.run([str(ROOT / "scripts/infra/postgres.sh"), command], env=env, check=True)


def _seed(url: str, calls: int) -> None:
    started = time.monotonic()
    seed_pending(
        url,
        calls,
        "http://127.0.0.1:9/x",
        timedelta(seconds=2),
        datetime.now(UTC) + timedelta(days=1),
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE orchestrator.service_calls SET tags = '{common}' WHERE tenant_id = %s",
            (TENANT,),
        )
        conn.execute(
            "INSERT INTO orchestrator.service_call_tags"
            " SELECT tenant_id, 'common', created_at, service_call_id"
            " FROM orchestrator.service_calls WHERE tenant_id = %s ON CONFLICT DO NOTHING",
            (TENANT,),
        )
        conn.execute("VACUUM ANALYZE orchestrator.service_calls")
        conn.execute("ANALYZE orchestrator.service_call_tags")
    print(f"seeded and tagged {calls} calls in {time.monotonic() - started:.1f} s")


async def _measure(url: str) -> None:
    engine = make_engine(url)
    store = PostgresServiceCallStore(engine)
    base = ListQuery(tenant_id=TENANT, page_size=50)
    cases = [
        ("first page, by create_time", base, 1),
        ("20 pages deep (keyset), by create_time", base, 20),
        (
            "first page, by schedule_time desc",
            replace(base, order_by="schedule_time", descending=True),
            1,
        ),
        ("states=SCHEDULED (all match)", replace(base, statuses=frozenset({Status.SCHEDULED})), 1),
        ("states=CANCELED (none match)", replace(base, statuses=frozenset({Status.CANCELED})), 1),
        ("tags=common (all match)", replace(base, tags=frozenset({"common"})), 1),
        ("tags=common, 20 pages deep", replace(base, tags=frozenset({"common"})), 20),
        ("tags=nomatch", replace(base, tags=frozenset({"nomatch"})), 1),
        ("tags=common+nomatch", replace(base, tags=frozenset({"common", "nomatch"})), 1),
        ("page_size=1000", replace(base, page_size=1000), 1),
    ]
    print("| query | ms per page (median of 5) |\n|---|---|")
    for name, query, pages in cases:
        runs = []
        for _ in range(5):
            started, current = time.perf_counter(), query
            for _ in range(pages):
                page = await store.list(current)
                if page.next_cursor is None:
                    break
                current = replace(current, after=page.next_cursor)
            runs.append((time.perf_counter() - started) * 1000 / pages)
        print(f"| {name} | {statistics.median(runs):.2f} |")
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=21432)
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run" / "bench-list")
    args = parser.parse_args()
    _postgres("start", args.run_dir, args.port)
    try:
        url = f"postgresql://postgres@127.0.0.1:{args.port}/servicecall"
        migrate(url, ORCHESTRATOR_MIGRATIONS, "orchestrator")
        migrate(url, SCHEDULER_MIGRATIONS, "scheduler")
        with psycopg.connect(url) as conn:
            seeded = conn.execute(
                "SELECT count(*) FROM orchestrator.service_calls WHERE tenant_id = %s", (TENANT,)
            ).fetchone()
        if seeded is None or seeded[0] < args.calls:
            _seed(url, args.calls - (seeded[0] if seeded else 0))
        asyncio.run(_measure(url))
    finally:
        _postgres("stop", args.run_dir, args.port)


if __name__ == "__main__":
    main()
