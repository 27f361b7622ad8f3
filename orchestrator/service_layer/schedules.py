"""The schedule use cases (ScheduleService) and the materialiser's pass, which makes each due
occurrence's call through the ordinary submit.

An occurrence's call has a deterministic id: its idempotency key is `occurrence_key(schedule,
time)`, so its id is `service_call_id_for(tenant, key)` (a UUIDv5). Whoever makes it, however
often (a second replica, a pass redone after a crash between the submits and the schedule's
commit), it is one call: the submit answers "already there". The same derivation finds the
calls a pause or a delete must cancel.

A template's secret headers are stored sealed to the schedule (`schedule_binding`), opened
only when an occurrence is made; the submit then seals them again for the call, exactly as a
replay does (services.Orchestrator.replay).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mesh.logs import get_logger
from mesh.ports import Clock, IdGen
from mesh.secrets import SecretBox
from orchestrator.domain.errors import IdempotencyConflict
from orchestrator.domain.idempotency import service_call_id_for
from orchestrator.domain.schedules import (
    MAX_MISSED_FIRED,
    CallTemplate,
    Recurrence,
    Schedule,
    ScheduleState,
    next_occurrence,
    occurrence_key,
    parse_recurrence,
    plan_occurrences,
    validate_description,
    validate_schedule_id,
)
from orchestrator.domain.states import Canceled
from orchestrator.domain.validation import (
    FieldViolation,
    Limits,
    validate_submission,
    validate_tenant_id,
)
from orchestrator.ports import (
    Accepted,
    Invalid,
    OccurrenceObserver,
    ScheduleDraft,
    ScheduleEnded,
    ScheduleExists,
    ScheduleNotFound,
    SchedulePage,
    ScheduleRefusal,
    ScheduleStore,
    ScheduleVersionMismatch,
    Submission,
    template_field,
)
from orchestrator.service_layer.sealing import open_secret_headers, seal_secret_headers
from orchestrator.service_layer.services import Orchestrator

log = get_logger(__name__)


def schedule_binding(schedule_id: str) -> str:
    """What a template's sealed headers are bound to, in the place of a call id: they open
    for this schedule only (a copied row or value opens for no call and no other schedule)."""
    return f"schedule:{schedule_id}"


class Schedules:
    """Create, read, change and delete schedules. Time and ids come from the ports; calls are
    canceled through the ordinary cancel use case."""

    def __init__(
        self,
        store: ScheduleStore,
        calls: Orchestrator,
        clock: Clock,
        ids: IdGen,
        secrets: SecretBox,
        limits: Limits,
    ) -> None:
        self._store = store
        self._calls = calls
        self._clock = clock
        self._ids = ids
        self._secrets = secrets
        self._limits = limits

    async def create(self, draft: ScheduleDraft) -> Schedule | Invalid | ScheduleExists:
        now = self._clock.now()
        schedule_id = draft.schedule_id or self._ids.new_id()
        problems = list(validate_tenant_id(draft.tenant_id))
        if draft.schedule_id:
            problems.extend(validate_schedule_id(draft.schedule_id))
        recurrence = parse_recurrence(
            draft.cron, draft.time_zone, draft.start_at, draft.end_at, draft.start_at or now
        )
        if isinstance(recurrence, list):
            problems.extend(recurrence)
        template = self._template(draft.template, draft.tenant_id, schedule_id, now)
        if isinstance(template, list):
            problems.extend(template)
        problems.extend(validate_description(draft.description))
        if problems:
            return Invalid(tuple(problems))
        assert isinstance(recurrence, Recurrence) and isinstance(template, CallTemplate)
        next_at = next_occurrence(recurrence, now)
        if next_at is None:
            # A schedule that would never make a call is a mistake in the request, not a
            # resource worth keeping.
            return Invalid(
                (FieldViolation("schedule.end_time", "no occurrence falls before end_time"),)
            )
        schedule = Schedule(
            tenant_id=draft.tenant_id,
            schedule_id=schedule_id,
            recurrence=recurrence,
            template=template,
            missed_policy=draft.missed_policy,
            description=draft.description,
            state=ScheduleState.ACTIVE,
            next_occurrence_at=next_at,
            last_occurrence_at=None,
            version=1,
            created_at=now,
            updated_at=now,
        )
        if not await self._store.create(schedule):
            return ScheduleExists(draft.tenant_id, schedule_id)
        log.info("schedule created", tenant_id=draft.tenant_id, schedule_id=schedule_id)
        return schedule

    async def get(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        return await self._store.get(tenant_id, schedule_id)

    async def list(self, tenant_id: str, page_size: int, after: str | None) -> SchedulePage:
        return await self._store.list(tenant_id, page_size, after)

    async def update(
        self,
        draft: ScheduleDraft,
        fields: frozenset[str],
        expected_version: int | None,
    ) -> Schedule | Invalid | ScheduleRefusal:
        """Changes `fields` (ports.SCHEDULE_FIELDS) to the draft's values. Calls already made
        keep the definition they were made with; when the recurrence changes, the next
        occurrence is the new one's first after now and after the last one made (never one
        made twice), and an ENDED schedule given occurrences again is ACTIVE again."""
        now = self._clock.now()
        tenant_id, schedule_id = draft.tenant_id, draft.schedule_id
        problems: list[FieldViolation] = []
        template = None
        if "call_template" in fields:
            made = self._template(draft.template, tenant_id, schedule_id, now)
            if isinstance(made, list):
                problems.extend(made)
            else:
                template = made
        if "description" in fields:
            problems.extend(validate_description(draft.description))
        if problems:
            return Invalid(tuple(problems))

        def step(current: Schedule) -> Schedule | Invalid | ScheduleRefusal:
            if expected_version is not None and expected_version != current.version:
                return ScheduleVersionMismatch(expected_version, current.version)
            was = current.recurrence
            recurrence = parse_recurrence(
                draft.cron if "cron" in fields else was.cron,
                draft.time_zone if "time_zone" in fields else was.time_zone,
                start_at := (draft.start_at if "start_time" in fields else was.start_at),
                draft.end_at if "end_time" in fields else was.end_at,
                start_at or current.created_at,
            )
            if isinstance(recurrence, list):
                return Invalid(tuple(recurrence))
            if current.state is ScheduleState.PAUSED:
                next_at, state = None, ScheduleState.PAUSED
            elif recurrence == was:
                # When the calls fall is unchanged: so is what comes next (an overdue next
                # occurrence stays due, for the missed-occurrence policy to judge).
                next_at, state = current.next_occurrence_at, current.state
            else:
                next_at = next_occurrence(recurrence, _after(now, current.last_occurrence_at))
                state = ScheduleState.ENDED if next_at is None else ScheduleState.ACTIVE
            return replace(
                current,
                recurrence=recurrence,
                template=current.template if template is None else template,
                missed_policy=(
                    draft.missed_policy
                    if "missed_occurrence_policy" in fields
                    else current.missed_policy
                ),
                description=draft.description if "description" in fields else current.description,
                state=state,
                next_occurrence_at=next_at,
                version=current.version + 1,
                updated_at=now,
            )

        return await self._store.change(tenant_id, schedule_id, step)

    async def pause(
        self, tenant_id: str, schedule_id: str, expected_version: int | None, correlation_id: str
    ) -> Schedule | ScheduleRefusal | Invalid:
        """No more calls, and the calls already made for occurrences after now canceled.

        The schedule is paused (committed) first: from then on no pass makes another call
        for it (a pass holds the schedule while it makes its calls, so none is under way
        either), and the calls to cancel are exactly those up to its last occurrence."""
        now = self._clock.now()

        def step(current: Schedule) -> Schedule | ScheduleRefusal:
            if expected_version is not None and expected_version != current.version:
                return ScheduleVersionMismatch(expected_version, current.version)
            match current.state:
                case ScheduleState.PAUSED:
                    return current
                case ScheduleState.ENDED:
                    return ScheduleEnded()
            return replace(
                current,
                state=ScheduleState.PAUSED,
                next_occurrence_at=None,
                version=current.version + 1,
                updated_at=now,
            )

        outcome = await self._store.change(tenant_id, schedule_id, step)
        if isinstance(outcome, Schedule):
            # Also when it was paused already: a pause cut short before its cancels is
            # finished by the next one.
            await self._cancel_made(outcome, now, "schedule paused", correlation_id)
        return outcome

    async def resume(
        self, tenant_id: str, schedule_id: str, expected_version: int | None
    ) -> Schedule | ScheduleRefusal | Invalid:
        """Calls again from the first occurrence after now (and after the last one made):
        the occurrences that fell while paused are not made."""
        now = self._clock.now()

        def step(current: Schedule) -> Schedule | ScheduleRefusal:
            if expected_version is not None and expected_version != current.version:
                return ScheduleVersionMismatch(expected_version, current.version)
            match current.state:
                case ScheduleState.ACTIVE:
                    return current
                case ScheduleState.ENDED:
                    return ScheduleEnded()
            next_at = next_occurrence(current.recurrence, _after(now, current.last_occurrence_at))
            return replace(
                current,
                state=ScheduleState.ENDED if next_at is None else ScheduleState.ACTIVE,
                next_occurrence_at=next_at,
                version=current.version + 1,
                updated_at=now,
            )

        return await self._store.change(tenant_id, schedule_id, step)

    async def delete(
        self, tenant_id: str, schedule_id: str, correlation_id: str
    ) -> ScheduleNotFound | None:
        """Deletes the schedule, then cancels the calls made for occurrences after now (in
        that order, for the reason given on `pause`). Calls sent or finished are kept."""
        now = self._clock.now()
        deleted = await self._store.delete(tenant_id, schedule_id)
        if deleted is None:
            return ScheduleNotFound(tenant_id, schedule_id)
        log.info("schedule deleted", tenant_id=tenant_id, schedule_id=schedule_id)
        await self._cancel_made(deleted, now, "schedule deleted", correlation_id)
        return None

    async def _cancel_made(
        self, schedule: Schedule, now: datetime, reason: str, correlation_id: str
    ) -> None:
        """Cancels the calls made for the occurrences in (now, last occurrence made]: a few,
        since a pass makes calls at most its lookahead ahead. One already handed off refuses
        (it may be on the wire), one never made is not found: both are fine.

        The occurrences are those of the schedule's current recurrence: after an update,
        a call made under the previous one within the lookahead is not found here and runs."""
        last = schedule.last_occurrence_at
        if last is None or last <= now:
            return
        occurrence = next_occurrence(schedule.recurrence, now)
        canceled = 0
        for _ in range(MAX_MISSED_FIRED):
            if occurrence is None or occurrence > last:
                break
            key = occurrence_key(schedule.schedule_id, occurrence)
            call_id = service_call_id_for(schedule.tenant_id, key)
            outcome = await self._calls.cancel(schedule.tenant_id, call_id, reason, correlation_id)
            if isinstance(outcome, Canceled):
                canceled += 1
            occurrence = next_occurrence(schedule.recurrence, occurrence)
        if canceled:
            log.info(
                "calls of a schedule's coming occurrences canceled",
                tenant_id=schedule.tenant_id,
                schedule_id=schedule.schedule_id,
                canceled=canceled,
            )

    def _template(
        self, given: Submission | None, tenant_id: str, schedule_id: str, now: datetime
    ) -> CallTemplate | builtins.list[FieldViolation]:
        """The call template, validated as a submit's call (field paths under
        `schedule.call_template.`), its secret headers sealed to the schedule."""
        if given is None:
            return [FieldViolation("schedule.call_template", "is required")]
        problems = [
            FieldViolation(template_field(v.field), v.description)
            for v in validate_submission(
                tenant_id=tenant_id,
                request=given.request,
                tags=given.tags,
                idempotency_key=None,
                retry_policy=given.retry_policy,
                due_at=now,
                now=now,
                limits=self._limits,
                callback_url=given.callback_url,
                failure_callback_url=given.failure_callback_url,
                max_lateness=given.max_lateness,
                response_rules=given.response_rules,
            )
            if v.field != "tenant_id"  # the schedule's own, checked once by the caller
        ]
        problems += [
            FieldViolation(template_field(v.field), v.description)
            for v in self._calls.template_queue_violations(
                tenant_id, given.queue_id, given.ordering_key
            )
        ]
        if problems:
            return problems
        return CallTemplate(
            request=seal_secret_headers(
                given.request, tenant_id, schedule_binding(schedule_id), self._secrets
            ),
            tags=given.tags,
            retry_policy=given.retry_policy,
            callback_url=given.callback_url,
            failure_callback_url=given.failure_callback_url,
            max_lateness=given.max_lateness,
            response_rules=given.response_rules,
            queue_id=given.queue_id,
            ordering_key=given.ordering_key,
        )


def _after(now: datetime, last_made: datetime | None) -> datetime:
    return now if last_made is None else max(now, last_made)


@dataclass(frozen=True, slots=True)
class PassResult:
    claimed: int = 0
    made: int = 0  # calls created by this pass
    existing: int = 0  # occurrences whose call was already there (a redo, another replica)
    missed: int = 0  # left out by the missed-occurrence policy
    skipped: int = 0  # not made: the call was invalid, or its secret headers no longer open


class Materialiser:
    """One pass: claims the ACTIVE schedules with an occurrence due within `lookahead`, makes
    each due occurrence's call through the ordinary submit, moves each schedule on, commits.

    `lookahead` must exceed the hand-off lead, so that each call exists before its hand-off
    time and is sent on time by the normal timer path (the executor holds it until its due
    time: never early). An occurrence more than `missed_after` in the past was missed (the
    mesh was down): the schedule's missed-occurrence policy decides which of those are made.
    A pass makes at most `per_schedule` calls per schedule (the rest wait for the next pass),
    so that a pass, which holds its schedules, stays short even after a long outage.
    """

    def __init__(
        self,
        store: ScheduleStore,
        calls: Orchestrator,
        clock: Clock,
        secrets: SecretBox,
        lookahead: timedelta,
        missed_after: timedelta,
        limit: int,
        per_schedule: int = 100,
        observer: OccurrenceObserver | None = None,
    ) -> None:
        self._store = store
        self._calls = calls
        self._clock = clock
        self._secrets = secrets
        self._lookahead = lookahead
        self._missed_after = missed_after
        self._limit = limit
        self._per_schedule = per_schedule
        self._observer = observer

    @property
    def limit(self) -> int:
        return self._limit

    async def run_pass(self) -> PassResult:
        now = self._clock.now()
        counts = _Counts()

        async def advance(schedule: Schedule) -> Schedule:
            return await self._advance(schedule, now, counts)

        claimed = await self._store.claim_due(now + self._lookahead, self._limit, advance)
        result = PassResult(claimed, counts.made, counts.existing, counts.missed, counts.skipped)
        if result.made or result.missed or result.skipped:
            log.info(
                "schedule pass",
                claimed=claimed,
                made=result.made,
                existing=result.existing,
                missed=result.missed,
                skipped=result.skipped,
            )
        if self._observer is not None:
            self._observer.observe_occurrences(result.made, result.missed, result.skipped)
        return result

    async def _advance(self, schedule: Schedule, now: datetime, counts: _Counts) -> Schedule:
        next_at = schedule.next_occurrence_at
        assert next_at is not None  # claimed: ACTIVE, so it has one
        template = schedule.template
        tenant_id, schedule_id = schedule.tenant_id, schedule.schedule_id
        try:
            plan = plan_occurrences(
                schedule.recurrence,
                schedule.missed_policy,
                next_at,
                now,
                self._lookahead,
                self._missed_after,
                self._per_schedule,
            )
            request = open_secret_headers(
                template.request, tenant_id, schedule_binding(schedule_id), self._secrets
            )
        except Exception:
            # No I/O above: this is a bug or a value the core cannot take, in this schedule
            # only. It must not hold up every other schedule's calls; tried again next pass.
            # (The submits below raise only for an outage: the whole pass is then redone.)
            log.exception("schedule not advanced", tenant_id=tenant_id, schedule_id=schedule_id)
            return schedule
        counts.missed += plan.missed
        if request is None and plan.make:
            counts.skipped += len(plan.make)
            log.error(
                "occurrences not made: a secret header of the schedule's template no longer "
                "opens (its key was retired); update its call_template",
                tenant_id=tenant_id,
                schedule_id=schedule_id,
                occurrences=len(plan.make),
            )
        for occurrence in plan.make:
            if request is None:
                break
            key = occurrence_key(schedule_id, occurrence)
            submission = Submission(
                tenant_id=tenant_id,
                request=request,
                tags=template.tags,
                idempotency_key=key,
                retry_policy=template.retry_policy,
                due=occurrence,
                callback_url=template.callback_url,
                failure_callback_url=template.failure_callback_url,
                max_lateness=template.max_lateness,
                schedule_id=schedule_id,
                response_rules=template.response_rules,
                queue_id=template.queue_id,
                ordering_key=template.ordering_key,
            )
            outcome = await self._calls.submit(submission, key)
            if isinstance(outcome, Accepted):
                if outcome.created:
                    counts.made += 1
                else:
                    counts.existing += 1
            elif isinstance(outcome, IdempotencyConflict):
                # Made already, by an earlier definition of the schedule (an update within
                # the lookahead): that call stands.
                counts.existing += 1
            else:
                counts.skipped += 1
                problem = (
                    "; ".join(f"{v.field}: {v.description}" for v in outcome.violations)
                    if isinstance(outcome, Invalid)
                    else outcome.message
                )
                log.warning(
                    "occurrence not made",
                    tenant_id=tenant_id,
                    schedule_id=schedule_id,
                    occurrence=occurrence.isoformat(),
                    problem=problem,
                )
        last = max(plan.make, default=None)
        return replace(
            schedule,
            next_occurrence_at=plan.next_at,
            last_occurrence_at=schedule.last_occurrence_at if last is None else last,
            state=ScheduleState.ENDED if plan.next_at is None else ScheduleState.ACTIVE,
        )


@dataclass
class _Counts:
    made: int = 0
    existing: int = 0
    missed: int = 0
    skipped: int = 0
