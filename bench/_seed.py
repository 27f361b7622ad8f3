"""Seeds calls pending far in the future, fast, by COPY into the services' own tables.

Submitting a million calls through the API would take tens of minutes on a 2-core machine, and
what the benchmark needs is the steady state after those submissions: for each call a
`Scheduled` row in `orchestrator.service_calls` and its pending HANDOFF timer in
`scheduler.timers`. Those two rows are exactly what the services leave behind once a submission
and its TimerRequested were applied (the outbox row would be published and pruned by then).
The state is made by the real core (decide + evolve) and encoded by the real codec once, as a
template; each row is that template with its own id and times substituted, so a seeded call
is indistinguishable from a submitted one (it can be read, listed, canceled, and would fire).
"""

from __future__ import annotations

import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from orchestrator.adapters import codec
from orchestrator.domain.commands import SubmitServiceCall
from orchestrator.domain.decide import decide, evolve
from orchestrator.domain.idempotency import fingerprint
from orchestrator.domain.model import (
    DEFAULT_RETRY_POLICY,
    DEFAULT_TIMING,
    HttpRequest,
    ServiceCallSpec,
    Timing,
)
from orchestrator.domain.states import Scheduled
from scheduler.domain.timers import TimerKey

PENDING_TENANT = "bench-pending"
HANDOFF = 1  # servicecall.internal.v1.TimerPurpose.TIMER_PURPOSE_HANDOFF

_ID = "00000000-0000-7000-8000-00000000beef"
# Distinct microseconds so each template time is found, and replaced, unambiguously.
_DUE = datetime(2000, 1, 1, 0, 0, 0, 111111, tzinfo=UTC)
_CREATED = datetime(1999, 1, 1, 0, 0, 0, 333333, tzinfo=UTC)


def _template(url: str, lead: timedelta) -> tuple[str, int]:
    request = HttpRequest("POST", url, (), b"pending", timedelta(seconds=30))
    spec = ServiceCallSpec(
        tenant_id=PENDING_TENANT,
        service_call_id=_ID,
        request=request,
        tags=frozenset(),
        idempotency_key=None,
        retry_policy=DEFAULT_RETRY_POLICY,
        # No idempotency key, so the fingerprint is never compared: any key will do.
        fingerprint=fingerprint(
            request, frozenset(), DEFAULT_RETRY_POLICY, _DUE, key=b"bench-seed"
        ),
        created_at=_CREATED,
    )
    timing = Timing(lead, DEFAULT_TIMING.dispatch_lease, DEFAULT_TIMING.attempt_grace)
    events = decide(None, SubmitServiceCall(spec=spec, due_at=_DUE), _CREATED, timing)
    assert isinstance(events, tuple)
    state = None
    for event in events:
        state = evolve(state, event)
    assert isinstance(state, Scheduled) and state.handoff_at == _DUE - lead
    return json.dumps(codec.encode(state)), state.version


def _copy_text(value: str) -> str:
    # COPY text format: backslash, tab and newline must be escaped.
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def pending_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM scheduler.timers WHERE tenant_id = %s AND state = 'pending'",
            (PENDING_TENANT,),
        ).fetchone()
    return int(row[0]) if row else 0


def seed_pending(
    database_url: str,
    count: int,
    url: str,
    lead: timedelta,
    first_due: datetime,
    spacing: timedelta = timedelta(milliseconds=50),
    chunk: int = 50_000,
) -> None:
    """Adds `count` Scheduled calls due from `first_due` on, `spacing` apart, with their
    pending HANDOFF timers; both tables are written in one transaction per chunk."""
    template, version = _template(url, lead)
    due_iso, created_iso = _DUE.isoformat(), _CREATED.isoformat()
    handoff_iso = (_DUE - lead).isoformat()
    now = datetime.now(UTC)
    with psycopg.connect(database_url) as conn:
        for start in range(0, count, chunk):
            calls, timers = io.StringIO(), io.StringIO()
            for i in range(start, min(start + chunk, count)):
                call_id = str(uuid.uuid4())
                due = first_due + spacing * i
                handoff = due - lead
                state = (
                    template.replace(_ID, call_id)
                    .replace(handoff_iso, handoff.isoformat())
                    .replace(due_iso, due.isoformat())
                    .replace(created_iso, now.isoformat())
                )
                calls.write(
                    "\t".join(
                        (
                            PENDING_TENANT,
                            call_id,
                            "SCHEDULED",
                            str(version),
                            due.isoformat(),
                            "1",
                            "{}",
                            "\\N",
                            _copy_text(state),
                            now.isoformat(),
                            now.isoformat(),
                        )
                    )
                    + "\n"
                )
                key = TimerKey(PENDING_TENANT, call_id, HANDOFF, 1, handoff)
                timers.write(
                    "\t".join(
                        (
                            key.timer_id(),
                            PENDING_TENANT,
                            call_id,
                            str(HANDOFF),
                            "1",
                            handoff.isoformat(),
                            "pending",
                            f"bench-seed/{call_id}",
                            f"bench-seed/{call_id}",
                            str(version),
                        )
                    )
                    + "\n"
                )
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(
                    "COPY orchestrator.service_calls (tenant_id, service_call_id, status,"
                    " version, due_at, attempt, tags, idempotency_key, state, created_at,"
                    " updated_at) FROM STDIN"
                ) as copy:
                    copy.write(calls.getvalue())
                with cur.copy(
                    "COPY scheduler.timers (timer_id, tenant_id, service_call_id, purpose,"
                    " attempt, fire_at, state, armed_by, correlation_id, sequence) FROM STDIN"
                ) as copy:
                    copy.write(timers.getvalue())
        conn.execute("ANALYZE orchestrator.service_calls")
        conn.execute("ANALYZE scheduler.timers")
        conn.commit()


def remove_pending(database_url: str, tries: int = 5) -> None:
    # The orchestrator's one-time pass over older Scheduled calls (the hand-off backstop,
    # orchestrator/adapters/store.py) updates these rows page by page in key order when the
    # mesh starts; a DELETE of a million rows in heap order can deadlock with it. Postgres
    # aborts one of the two; the pass goes on, and so do we, after it has moved on.
    for attempt in range(tries):
        try:
            with psycopg.connect(database_url) as conn:
                conn.execute("DELETE FROM scheduler.timers WHERE tenant_id = %s", (PENDING_TENANT,))
                conn.execute(
                    "DELETE FROM orchestrator.service_calls WHERE tenant_id = %s",
                    (PENDING_TENANT,),
                )
                conn.commit()
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == tries - 1:
                raise
            time.sleep(1.0)
