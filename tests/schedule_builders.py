"""Builders of schedules for tests: values as the use cases make them (a recurrence parsed by
the core, a template with its secret headers sealed to the schedule)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from orchestrator.domain.model import DEFAULT_RETRY_POLICY, HttpRequest
from orchestrator.domain.schedules import (
    CallTemplate,
    MissedOccurrencePolicy,
    Recurrence,
    Schedule,
    ScheduleState,
    next_occurrence,
    parse_recurrence,
)
from orchestrator.ports import ScheduleDraft, Submission
from tests.builders import T0

REQUEST = HttpRequest(
    "POST",
    "https://example.test/tick",
    (("content-type", "application/json"), ("Authorization", "Bearer s3cret")),
    b'{"tick": true}',
    timedelta(seconds=10),
)


def new_schedule_id() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


def recurrence(cron: str = "@every 1s", anchor: datetime = T0) -> Recurrence:
    parsed = parse_recurrence(cron, "", None, None, anchor)
    assert isinstance(parsed, Recurrence), parsed
    return parsed


def template(**changes: object) -> CallTemplate:
    base = CallTemplate(
        request=REQUEST,
        tags=frozenset({"nightly"}),
        retry_policy=DEFAULT_RETRY_POLICY,
        callback_url="https://example.test/done",
        failure_callback_url=None,
        max_lateness=timedelta(seconds=90),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def schedule(
    tenant_id: str,
    schedule_id: str | None = None,
    *,
    cron: str = "@every 1s",
    now: datetime = T0,
    state: ScheduleState = ScheduleState.ACTIVE,
    **changes: object,
) -> Schedule:
    rec = recurrence(cron, now)
    active = state is ScheduleState.ACTIVE
    base = Schedule(
        tenant_id=tenant_id,
        schedule_id=schedule_id or new_schedule_id(),
        recurrence=rec,
        template=template(),
        missed_policy=MissedOccurrencePolicy.FIRE_LATEST,
        description="every second",
        state=state,
        next_occurrence_at=next_occurrence(rec, now) if active else None,
        last_occurrence_at=None,
        version=1,
        created_at=now,
        updated_at=now,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def draft(tenant_id: str, schedule_id: str = "", **changes: Any) -> ScheduleDraft:
    """A CreateSchedule's definition: `@every 1s`, a template with a secret header."""
    base = ScheduleDraft(
        tenant_id=tenant_id,
        schedule_id=schedule_id,
        cron="@every 1s",
        time_zone="",
        template=Submission(
            tenant_id=tenant_id,
            request=REQUEST,
            tags=frozenset({"nightly"}),
            idempotency_key=None,
            retry_policy=DEFAULT_RETRY_POLICY,
            due=None,
        ),
        description="every second",
    )
    return replace(base, **changes)
