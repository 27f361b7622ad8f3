"""What SQLAlchemy Core costs per execute against textual SQL, on the scheduler's hot statements.

`PYTHONPATH=.:gen .venv/bin/python -m bench.sql_styles` starts a Postgres of its own (fsync on,
as in production; run dir .run/bench-sql-styles, port 31632), migrates the scheduler's schema,
and executes the firing loop's claim and the arming batch each way: as the `sa.text`
statements the scheduler used before (kept here, verbatim) and as the Core constants of
scheduler/adapters/store.py, each in a transaction of its own as the store runs them. Rounds
alternate the two styles; the table gives medians over the rounds of wall and process-CPU time
per execute. The SQL that reaches Postgres is the same both ways, so the difference is the
client's: building the cache key of a Core statement and looking it up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import make_engine, migrate
from scheduler.adapters.store import _ARM_MANY, _CLAIM, _batch_json
from scheduler.domain.timers import HANDOFF_PURPOSE, Timer, TimerKey
from scheduler.main import MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]

# The statements as the scheduler wrote them before they became Core (git history of
# scheduler/adapters/store.py), the baseline this measures against.
_COLUMNS = (
    "timer_id::text AS timer_id, tenant_id, service_call_id, purpose, attempt, fire_at, state,"
    " armed_by, correlation_id, sequence, trace_context"
)
TEXT_ARM_MANY = sa.text(
    """
    INSERT INTO scheduler.timers (timer_id, tenant_id, service_call_id, purpose, attempt,
                                  fire_at, state, armed_by, correlation_id, sequence,
                                  trace_context)
    SELECT t.timer_id, t.tenant_id, t.service_call_id, t.purpose, t.attempt,
           t.fire_at, 'pending', t.armed_by, t.correlation_id, t.sequence, t.trace_context
      FROM jsonb_to_recordset(CAST(:timers AS jsonb))
           AS t(timer_id uuid, tenant_id text, service_call_id text, purpose smallint,
                attempt integer, fire_at timestamptz, armed_by text, correlation_id text,
                sequence bigint, trace_context jsonb)
    ON CONFLICT (timer_id) DO UPDATE
       SET state = 'pending', armed_by = EXCLUDED.armed_by, claimed_until = NULL,
           fired_at = NULL, correlation_id = EXCLUDED.correlation_id,
           sequence = EXCLUDED.sequence, trace_context = EXCLUDED.trace_context
     WHERE scheduler.timers.state = 'fired'
       AND scheduler.timers.armed_by <> EXCLUDED.armed_by
    RETURNING timer_id::text
    """
)
TEXT_CLAIM = sa.text(
    f"""
    UPDATE scheduler.timers AS t SET claimed_until = :lease_until
      FROM (SELECT timer_id FROM scheduler.timers
             WHERE state = 'pending' AND fire_at <= :handoffs_until
               AND (fire_at <= :now OR purpose = {HANDOFF_PURPOSE})
               AND (claimed_until IS NULL OR claimed_until <= :now)
             ORDER BY fire_at
             LIMIT :limit
             FOR UPDATE SKIP LOCKED) AS due
     WHERE t.timer_id = due.timer_id
    RETURNING {_COLUMNS.replace("timer_id::text", "t.timer_id::text")}
    """
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _timers(count: int) -> list[Timer]:
    return [
        Timer(
            key=TimerKey("bench-sql", str(uuid.uuid4()), 1, 1, NOW - timedelta(seconds=1)),
            armed_by=f"e-{uuid.uuid4()}",
            correlation_id="c",
            sequence=1,
            trace_context={"traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"},
        )
        for _ in range(count)
    ]


class Case:
    """One statement executed one way; `prepare` builds the parameters of the next
    `executes` executes outside the timing."""

    def __init__(
        self,
        engine: AsyncEngine,
        statement: Any,
        params: Callable[[], dict[str, Any]],
        expect: int,
    ) -> None:
        self._engine = engine
        self._statement = statement
        self._params = params
        self._expect = expect
        self._ready: list[dict[str, Any]] = []

    def prepare(self, executes: int) -> None:
        self._ready = [self._params() for _ in range(executes)]

    async def once(self) -> None:
        params = self._ready.pop()
        async with self._engine.begin() as conn:
            rows = (await conn.execute(self._statement, params)).all()
        assert len(rows) == self._expect, (len(rows), self._expect)

    async def time(self, executes: int) -> tuple[float, float]:
        """Microseconds of wall and of process CPU per execute."""
        self.prepare(executes)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(executes):
            await self.once()
        return (
            (time.perf_counter() - wall) * 1e6 / executes,
            (time.process_time() - cpu) * 1e6 / executes,
        )


def _arm(engine: AsyncEngine, statement: Any, batch: int) -> Case:
    return Case(engine, statement, lambda: {"timers": _batch_json(_timers(batch))}, batch)


def _claim(engine: AsyncEngine, statement: Any, limit: int) -> Case:
    # A lease that ends at `now`: the claimed rows are claimable again at once, so every
    # execute claims (and returns) the same `limit` rows, as a busy firing loop's claims do.
    params = {"now": NOW, "handoffs_until": NOW, "limit": limit, "lease_until": NOW}
    return Case(engine, statement, lambda: params, limit)


async def _measure(url: str, executes: int, rounds: int, batch: int) -> None:
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("DELETE FROM scheduler.timers WHERE tenant_id = 'bench-sql'")  # setup only
        )
        await conn.execute(sa.text("ANALYZE scheduler.timers"))  # setup only
    # Due timers for the claims to take.
    seed = _arm(engine, _ARM_MANY, batch)
    seed.prepare(1)
    await seed.once()
    cases = {
        f"claim {batch}": {
            "text": _claim(engine, TEXT_CLAIM, batch),
            "core": _claim(engine, _CLAIM, batch),
        },
        f"arm {batch}": {
            "text": _arm(engine, TEXT_ARM_MANY, batch),
            "core": _arm(engine, _ARM_MANY, batch),
        },
        "arm 1": {
            "text": _arm(engine, TEXT_ARM_MANY, 1),
            "core": _arm(engine, _ARM_MANY, 1),
        },
    }
    print(f"{executes} executes per round, median of {rounds} rounds (styles alternate)\n")
    print("| statement | style | wall µs/execute | CPU µs/execute | Core − text, CPU |")
    print("|---|---|---|---|---|")
    for name, styles in cases.items():
        for case in styles.values():  # warm: the compiled cache, psycopg's prepared plans
            case.prepare(50)
            for _ in range(50):
                await case.once()
        samples: dict[str, list[tuple[float, float]]] = {style: [] for style in styles}
        for round_ in range(rounds):
            order = list(styles) if round_ % 2 == 0 else list(reversed(styles))
            for style in order:
                samples[style].append(await styles[style].time(executes))
        medians = {
            style: (
                statistics.median(w for w, _ in runs),
                statistics.median(c for _, c in runs),
            )
            for style, runs in samples.items()
        }
        for style, (wall, cpu) in medians.items():
            extra = ""
            if style == "core":
                delta = cpu - medians["text"][1]
                extra = f"{delta:+.1f} µs ({delta / medians['text'][0]:+.1%} of text's wall)"
            print(f"| {name} | {style} | {wall:.1f} | {cpu:.1f} | {extra} |")
    await engine.dispose()


def _postgres(command: str, run_dir: Path, port: int) -> None:
    env = {**os.environ, "PG_DIR": str(run_dir), "PG_PORT": str(port), "PG_FSYNC": "on"}
    subprocess.run([str(ROOT / "scripts/infra/postgres.sh"), command], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--executes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10, help="timers per claim and per arm")
    parser.add_argument("--port", type=int, default=31632)
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run" / "bench-sql-styles")
    args = parser.parse_args()
    _postgres("start", args.run_dir, args.port)
    try:
        url = f"postgresql://postgres@127.0.0.1:{args.port}/servicecall"
        migrate(url, MIGRATIONS, "scheduler")
        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()  # setup only
        print(f"Postgres {version[0] if version else '?'}, SQLAlchemy {sa.__version__}")
        asyncio.run(_measure(url, args.executes, args.rounds, args.batch))
    finally:
        _postgres("stop", args.run_dir, args.port)


if __name__ == "__main__":
    main()
