"""Keeps the dispatch-lease and attempt-deadline timers: one sweep of overdue calls in the store.

The core still asks for these timers (TimerRequested); mapping.outbox_messages keeps them from the
scheduler, and the store records each call's as its `watchdog_at`. A sweep applies to every
call whose time has come the FireTimer the scheduler's DueTimeReached would have carried,
through `Orchestrator.apply` like any fact from Kafka, so the core's guards (attempt, fire
time, state) decide what it does, and the resulting facts leave through the outbox.

Several replicas sweep at once without coordinating: an application's event id is derived
from what it fires (see `event_id`), so the inbox lets one replica apply it and the others
get "already applied"; and once applied, the call no longer holds that timer.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC

from mesh.logs import call_context, get_logger
from mesh.ports import Clock
from orchestrator.domain.commands import FireTimer
from orchestrator.domain.decide import watchdog_timer
from orchestrator.domain.states import ServiceCallState
from orchestrator.ports import ServiceCallStore
from orchestrator.service_layer.services import Orchestrator

log = get_logger(__name__)

_EVENT_IDS = uuid.UUID("5c0a6b1e-8f3d-4d59-9a57-2b7f1e0c9d41")


def event_id(state: ServiceCallState, timer: FireTimer) -> str:
    """The same for every replica that sees this call at this version with this timer due.

    The version is part of it so that an application the core answers by re-arming (our clock
    behind the fire time, e.g. after a step back) is not mistaken for done on the next sweep:
    the re-arm bumps the version, the timer stays, and the next sweep gets a new id.
    """
    spec = state.spec
    name = "/".join(
        (
            spec.tenant_id,
            spec.service_call_id,
            timer.purpose.value,
            str(timer.attempt),
            timer.fire_at.astimezone(UTC).isoformat(),
            str(state.version),
        )
    )
    return str(uuid.uuid5(_EVENT_IDS, name))


class WatchdogSweep:
    def __init__(
        self,
        orchestrator: Orchestrator,
        store: ServiceCallStore,
        clock: Clock,
        batch_size: int = 256,
    ) -> None:
        self._orchestrator = orchestrator
        self._store = store
        self._clock = clock
        self._batch_size = batch_size

    async def sweep(self) -> bool:
        """Fires the timers of one batch of overdue calls; True when more may be waiting."""
        overdue = await self._store.overdue_watchdogs(self._clock.now(), self._batch_size)
        # Concurrently, so the store can write them in one batch; one that fails (logged in
        # _fire) is read again by the next sweep.
        applied = await asyncio.gather(*(self._fire(state) for state in overdue))
        return len(overdue) == self._batch_size and all(applied)

    async def _fire(self, state: ServiceCallState) -> bool:
        timer = watchdog_timer(state)
        if timer is None:
            return True
        spec = state.spec
        applied_as = event_id(state, timer)
        with call_context(spec.tenant_id, spec.service_call_id, applied_as):
            try:
                transition = await self._orchestrator.apply(
                    spec.tenant_id, spec.service_call_id, timer, applied_as, applied_as
                )
            except Exception:
                log.exception("watchdog timer not applied; next sweep retries")
                return False
            if transition is None:
                log.debug("watchdog timer already applied", event_id=applied_as)
            elif transition.rejection is not None:
                log.info(
                    "watchdog timer ignored",
                    purpose=timer.purpose.value,
                    attempt=timer.attempt,
                    reason=transition.rejection.message,
                )
            else:
                log.info(
                    "watchdog timer fired",
                    purpose=timer.purpose.value,
                    attempt=timer.attempt,
                    fire_at=timer.fire_at.isoformat(),
                    events=[type(e).__name__ for e in transition.events],
                )
        return True
