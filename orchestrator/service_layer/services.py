"""The orchestrator's use cases: each runs the pure core inside one store transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from mesh.logs import call_context, get_logger
from mesh.ports import Clock, IdGen
from mesh.secrets import SecretBox
from orchestrator.domain.commands import (
    AbandonServiceCall,
    CancelServiceCall,
    Command,
    CommandKind,
    HoldServiceCall,
    ReleaseServiceCall,
    RescheduleServiceCall,
    RunServiceCallNow,
    SubmitServiceCall,
)
from orchestrator.domain.decide import decide, evolve
from orchestrator.domain.errors import (
    AlreadySubmitted,
    DomainError,
    NotReplayable,
    ServiceCallNotFound,
    UnknownQueue,
)
from orchestrator.domain.idempotency import DueSpec, fingerprint, service_call_id_for
from orchestrator.domain.model import ServiceCallSpec, Timing
from orchestrator.domain.queues import (
    DEFAULT_QUEUE_ID,
    queue_gate,
    validate_ordering_key,
    validate_queue_id,
)
from orchestrator.domain.states import TERMINAL, ServiceCallState, status_of
from orchestrator.domain.validation import (
    FieldViolation,
    Limits,
    validate_delay,
    validate_due_at,
    validate_reason,
    validate_submission,
)
from orchestrator.ports import (
    Accepted,
    Invalid,
    ListQuery,
    OutboxMessages,
    Page,
    QueueConfigs,
    Replay,
    ServiceCallStore,
    Submission,
    SubmitObserver,
    Transition,
)
from orchestrator.service_layer.sealing import open_secret_headers, seal_secret_headers

log = get_logger(__name__)


class Orchestrator:
    """The use cases. `to_messages` turns a decision into the envelopes committed with it:
    the use cases hand it domain values only, never build a message themselves."""

    def __init__(
        self,
        store: ServiceCallStore,
        clock: Clock,
        ids: IdGen,
        timing: Timing,
        limits: Limits,
        to_messages: OutboxMessages,
        secrets: SecretBox,
        fingerprint_key: bytes,
        queues: QueueConfigs | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._ids = ids
        self._timing = timing
        self._limits = limits
        self._to_messages = to_messages
        self._secrets = secrets
        self._fingerprint_key = fingerprint_key
        # None: no queue but `default`, which never gates (a mesh without queues).
        self._queues = queues

    async def submit(
        self, submission: Submission, correlation_id: str
    ) -> Accepted | Invalid | DomainError:
        now = self._clock.now()
        match submission.due:
            case None:
                due_at = now
            case datetime():
                # A due time in the past means "now" (and year 1 minus the hand-off lead would
                # not even be a datetime).
                due = submission.due
                due_at = max(due, now) if due.tzinfo is not None else due  # naive: refused below
            case _:
                if problems := validate_delay(submission.due, "delay", self._limits):
                    return Invalid(tuple(problems))
                due_at = now + submission.due
        violations = validate_submission(
            tenant_id=submission.tenant_id,
            request=submission.request,
            tags=submission.tags,
            idempotency_key=submission.idempotency_key,
            retry_policy=submission.retry_policy,
            due_at=due_at,
            now=now,
            limits=self._limits,
            callback_url=submission.callback_url,
            failure_callback_url=submission.failure_callback_url,
            max_lateness=submission.max_lateness,
            response_rules=submission.response_rules,
        )
        violations += self._queue_violations(submission.queue_id, submission.ordering_key)
        if violations:
            return Invalid(tuple(violations))
        queue_id = submission.queue_id
        if queue_id is not None and not self._queue_exists(submission.tenant_id, queue_id):
            return UnknownQueue(submission.tenant_id, queue_id)
        key = submission.idempotency_key
        service_call_id = (
            service_call_id_for(submission.tenant_id, key) if key else self._ids.new_id()
        )
        # The fingerprint is over the request as the client sent it (so a retried submit
        # matches); what is stored has its secret headers sealed (sealing is randomised).
        # An unset due time is fingerprinted as "now", not as this instant: a client retrying
        # a keyed "run now" submit after a timeout sends the same request, and must get its
        # call back, not ALREADY_EXISTS (idempotency.fingerprint).
        replay_of = submission.replay_of
        request_fingerprint = fingerprint(
            submission.request,
            submission.tags,
            submission.retry_policy,
            submission.due,
            key=self._fingerprint_key,
            replay_of=replay_of,
            callback_url=submission.callback_url,
            failure_callback_url=submission.failure_callback_url,
            max_lateness=submission.max_lateness,
            callback_of=submission.callback_of,
            schedule_id=submission.schedule_id,
            response_rules=submission.response_rules,
            queue_id=queue_id,
            ordering_key=submission.ordering_key,
        )
        spec = ServiceCallSpec(
            tenant_id=submission.tenant_id,
            service_call_id=service_call_id,
            request=seal_secret_headers(
                submission.request, submission.tenant_id, service_call_id, self._secrets
            ),
            tags=submission.tags,
            idempotency_key=key,
            retry_policy=submission.retry_policy,
            fingerprint=request_fingerprint,
            created_at=now,
            replay_of=replay_of,
            callback_url=submission.callback_url,
            failure_callback_url=submission.failure_callback_url,
            max_lateness=submission.max_lateness,
            callback_of=submission.callback_of,
            schedule_id=submission.schedule_id,
            response_rules=submission.response_rules,
            queue_id=queue_id,
            ordering_key=submission.ordering_key,
        )
        transition = await self._run(
            submission.tenant_id,
            service_call_id,
            SubmitServiceCall(spec=spec, due_at=due_at),
            now,
            correlation_id,
            new_call=True,
        )
        assert transition is not None  # no inbox id, so the step always runs
        if isinstance(transition.rejection, AlreadySubmitted):
            return Accepted(transition.rejection.state, created=False)
        if transition.rejection is not None:
            return transition.rejection
        assert transition.state is not None
        return Accepted(transition.state, created=True)

    async def replay(self, replay: Replay, correlation_id: str) -> Accepted | Invalid | DomainError:
        """A new call made from a terminal one (SUCCEEDED, FAILED or CANCELED): the same
        request, retry policy, tags, callbacks, max_lateness and response rules, a new id, due at
        `replay.due` (default now), linked to the original by `replay_of`. Not the links the
        mesh set (`callback_of`, `schedule_id`): a replay is the tenant's own call, made by
        them, not a callback or an occurrence. It goes through `submit`, so it is validated (against
        today's limits), made idempotent by its key, and stored with its outbox rows exactly
        like a submitted call. The original is left as it is."""
        original = await self._store.get(replay.tenant_id, replay.service_call_id)
        if original is None:
            return ServiceCallNotFound(CommandKind.SUBMIT)
        if not isinstance(original, TERMINAL):
            return NotReplayable(status_of(original))
        spec = original.spec
        # Sealed headers are bound to the original call: opened here, sealed again for the
        # new one by submit.
        request = open_secret_headers(
            spec.request, spec.tenant_id, spec.service_call_id, self._secrets
        )
        if request is None:
            return Invalid(
                (
                    FieldViolation(
                        "service_call_id",
                        "a secret header of this call can no longer be opened (its key was "
                        "retired): submit the call again instead",
                    ),
                )
            )
        submission = Submission(
            tenant_id=spec.tenant_id,
            request=request,
            tags=spec.tags,
            idempotency_key=replay.idempotency_key,
            retry_policy=spec.retry_policy,
            due=replay.due,
            replay_of=spec.service_call_id,
            callback_url=spec.callback_url,
            failure_callback_url=spec.failure_callback_url,
            max_lateness=spec.max_lateness,
            response_rules=spec.response_rules,
            # In the same queue and key: a replay of a failed call is what unblocks its key
            # (Queue.ordering_failure_policy BLOCK).
            queue_id=spec.queue_id,
            ordering_key=spec.ordering_key,
        )
        return await self.submit(submission, correlation_id)

    @staticmethod
    def _queue_violations(queue_id: str | None, ordering_key: str | None) -> list[FieldViolation]:
        problems = []
        if queue_id is not None:
            problems += validate_queue_id(queue_id, "service_call.queue")
        if ordering_key is not None:
            problems += validate_ordering_key(ordering_key, "service_call.ordering_key")
        return problems

    def template_queue_violations(
        self, tenant_id: str, queue_id: str | None, ordering_key: str | None
    ) -> list[FieldViolation]:
        """What a schedule's call template's queue and ordering key break (paths as in a
        submit): a submit's checks, and the queue must exist now. A queue deleted later makes
        the occurrences unsubmittable: each is then skipped and logged (Materialiser)."""
        problems = self._queue_violations(queue_id, ordering_key)
        if not problems and queue_id is not None and not self._queue_exists(tenant_id, queue_id):
            problems.append(
                FieldViolation("service_call.queue", f'no queue "{queue_id}" in this tenant')
            )
        return problems

    def _queue_exists(self, tenant_id: str, queue_id: str) -> bool:
        if queue_id == DEFAULT_QUEUE_ID:
            return True
        return self._queues is not None and self._queues.get(tenant_id, queue_id) is not None

    def _gate(self, tenant_id: str, spec: ServiceCallSpec) -> str | None:
        """Whether the call's queue holds its hand-off now (domain/queues.queue_gate)."""
        queue_id = spec.queue_id or DEFAULT_QUEUE_ID
        queue = None if self._queues is None else self._queues.get(tenant_id, queue_id)
        return queue_gate(queue, queue_id, spec.ordering_key)

    async def get(self, tenant_id: str, service_call_id: str) -> ServiceCallState | None:
        return await self._store.get(tenant_id, service_call_id)

    async def list(self, query: ListQuery) -> Page:
        return await self._store.list(query)

    async def cancel(
        self, tenant_id: str, service_call_id: str, reason: str, correlation_id: str
    ) -> ServiceCallState | DomainError | Invalid:
        if problems := validate_reason(reason, self._limits):
            return Invalid(tuple(problems))
        return await self._command(
            tenant_id, service_call_id, CancelServiceCall(reason=reason), correlation_id
        )

    async def reschedule(
        self,
        tenant_id: str,
        service_call_id: str,
        due: DueSpec,
        expected_version: int | None,
        correlation_id: str,
    ) -> ServiceCallState | DomainError | Invalid:
        now = self._clock.now()
        if isinstance(due, timedelta):
            if problems := validate_delay(due, "delay", self._limits):
                return Invalid(tuple(problems))
            due = now + due
        if due.tzinfo is not None:
            due = max(due, now)
        if problems := validate_due_at(due, now, self._limits):
            return Invalid(tuple(FieldViolation("schedule_time", p.description) for p in problems))
        command = RescheduleServiceCall(due_at=due, expected_version=expected_version)
        return await self._command(tenant_id, service_call_id, command, correlation_id)

    async def run_now(
        self, tenant_id: str, service_call_id: str, correlation_id: str
    ) -> ServiceCallState | DomainError:
        return await self._command(tenant_id, service_call_id, RunServiceCallNow(), correlation_id)

    async def release(
        self, tenant_id: str, service_call_id: str, attempt: int, send_at: datetime
    ) -> ServiceCallState | DomainError:
        """Lets a held call go, to be sent at `send_at` or its due time (the queue
        dispatcher's, orchestrator/service_layer/queues.py); refused (NotHeld) when the call
        is no longer held in that attempt."""
        command = ReleaseServiceCall(attempt=attempt, send_at=send_at)
        return await self._command(tenant_id, service_call_id, command, f"queue:{tenant_id}")

    async def hold(
        self, tenant_id: str, service_call_id: str, attempt: int, reason: str
    ) -> ServiceCallState | DomainError:
        """Says anew why a held call waits (the queue dispatcher's)."""
        command = HoldServiceCall(attempt=attempt, reason=reason)
        return await self._command(tenant_id, service_call_id, command, f"queue:{tenant_id}")

    async def apply(
        self,
        tenant_id: str,
        service_call_id: str,
        command: Command,
        event_id: str,
        correlation_id: str,
    ) -> Transition | None:
        """Applies a fact from another service (a fired timer, an executor report) once."""
        return await self._run(
            tenant_id, service_call_id, command, self._clock.now(), correlation_id, event_id
        )

    async def abandon(
        self, tenant_id: str, service_call_id: str, reason: str, event_id: str
    ) -> Transition | None:
        """Fails a call the mesh cannot carry further (see orchestrator/entrypoints/parking.py),
        once per `event_id`; refused (and so harmless) when the call is unknown or already
        terminal."""
        return await self._run(
            tenant_id,
            service_call_id,
            AbandonServiceCall(reason=reason),
            self._clock.now(),
            event_id,
            event_id,
        )

    async def _command(
        self, tenant_id: str, service_call_id: str, command: Command, correlation_id: str
    ) -> ServiceCallState | DomainError:
        transition = await self._run(
            tenant_id, service_call_id, command, self._clock.now(), correlation_id
        )
        assert transition is not None
        if transition.rejection is not None:
            return transition.rejection
        assert transition.state is not None
        return transition.state

    async def _run(
        self,
        tenant_id: str,
        service_call_id: str,
        command: Command,
        now: datetime,
        correlation_id: str,
        event_id: str | None = None,
        *,
        new_call: bool = False,
    ) -> Transition | None:
        def step(before: ServiceCallState | None) -> Transition:
            spec = (
                before.spec
                if before is not None
                else command.spec
                if isinstance(command, SubmitServiceCall)
                else None
            )
            gate = None if spec is None else self._gate(tenant_id, spec)
            decision = decide(before, command, now, self._timing, gate)
            if not isinstance(decision, tuple):
                return Transition(before, rejection=decision)
            after = before
            for event in decision:
                after = evolve(after, event)
            assert after is not None
            return Transition(
                after, decision, self._to_messages(before, after, decision, correlation_id)
            )

        transition = await self._store.transact(
            tenant_id, service_call_id, step, event_id, new_call=new_call
        )
        if event_id is None and transition is not None:
            # Client commands; facts from other services are logged by the consumer.
            with call_context(tenant_id, service_call_id, correlation_id):
                if transition.rejection is not None:
                    log.info(
                        "command refused",
                        command=type(command).__name__,
                        reason=transition.rejection.message,
                    )
                else:
                    log.info(
                        "command applied",
                        command=type(command).__name__,
                        events=[type(e).__name__ for e in transition.events],
                    )
        return transition


class MeasuredOrchestrator(Orchestrator):
    """The use cases, reporting each submit's outcome (a batch reports each item)."""

    def __init__(self, metrics: SubmitObserver, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics

    async def submit(
        self, submission: Submission, correlation_id: str
    ) -> Accepted | Invalid | DomainError:
        try:
            outcome = await super().submit(submission, correlation_id)
        except Exception:
            self._metrics.observe_submit_error()
            raise
        self._metrics.observe_submit(outcome)
        return outcome
