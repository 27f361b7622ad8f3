"""The completion-callback use case: when a call has ended, make the calls its callbacks ask
for, each once.

Driven by the call's own terminal summary (the `completed` envelope its last transition
committed to the outbox, orchestrator/entrypoints/callbacks.py), so a callback is as durable
as the ending it reports: the summary is published at least once, and each callback is a
keyed submit (domain/callbacks.py `callback_key`), so a redelivered summary, a second replica
or a replayed parked message finds the callback already made.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.logs import call_context, get_logger
from orchestrator.domain.callbacks import (
    CALLBACK_RETRY_POLICY,
    CallbackKind,
    callback_request,
    callbacks_for,
    outcome_document,
)
from orchestrator.domain.errors import DomainError
from orchestrator.domain.states import TERMINAL
from orchestrator.ports import Accepted, Invalid, Submission
from orchestrator.service_layer.services import Orchestrator

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    """What became of one callback: made now, made before, or refused (and why)."""

    kind: CallbackKind
    service_call_id: str | None
    created: bool
    refused: str | None = None


class Callbacks:
    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator

    async def call_back(
        self, tenant_id: str, service_call_id: str, correlation_id: str
    ) -> list[CallbackOutcome]:
        """Makes the callbacks of the finished call `service_call_id` (none if it asked for
        none, is a callback itself, or is unknown or not finished: a summary is only
        committed with the ending, so the last two mean a store that lost it; logged).

        A refusal no retry can mend (a callback URL today's limits refuse, a key the tenant
        took for a call of its own) is logged and returned, not raised: raising would retry
        the message and then park it for nothing. An outage raises, and the consumer retries.
        """
        parent = await self._orchestrator.get(tenant_id, service_call_id)
        if parent is None or not isinstance(parent, TERMINAL):
            with call_context(tenant_id, service_call_id, correlation_id):
                log.warning("completion summary of a call not found finished; no callback")
            return []
        outcomes: list[CallbackOutcome] = []
        for callback in callbacks_for(parent):
            submission = Submission(
                tenant_id=tenant_id,
                request=callback_request(callback.url, outcome_document(parent)),
                # The parent's tags: a tenant that groups its calls by tag finds the
                # callbacks in the same group (the link tells them apart).
                tags=parent.spec.tags,
                idempotency_key=callback.idempotency_key,
                retry_policy=CALLBACK_RETRY_POLICY,
                due=None,
                callback_of=service_call_id,
            )
            outcome = await self._orchestrator.submit(submission, correlation_id)
            outcomes.append(
                _logged(callback.kind, outcome, tenant_id, service_call_id, correlation_id)
            )
        return outcomes


def _logged(
    kind: CallbackKind,
    outcome: Accepted | Invalid | DomainError,
    tenant_id: str,
    parent_id: str,
    correlation_id: str,
) -> CallbackOutcome:
    match outcome:
        case Accepted(state=state, created=created):
            child = state.spec.service_call_id
            with call_context(tenant_id, child, correlation_id):
                log.info(
                    "completion callback made" if created else "completion callback exists",
                    kind=kind.value,
                    callback_of=parent_id,
                )
            return CallbackOutcome(kind, child, created)
        case Invalid(violations=violations):
            refused = "; ".join(f"{v.field}: {v.description}" for v in violations)
        case _:
            refused = outcome.message
    with call_context(tenant_id, parent_id, correlation_id):
        log.error("completion callback refused", kind=kind.value, reason=refused)
    return CallbackOutcome(kind, None, False, refused)
