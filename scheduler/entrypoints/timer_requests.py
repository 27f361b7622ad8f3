"""Arms durable timers from the orchestrator's TimerRequested messages."""

from __future__ import annotations

from mesh import tracing
from mesh.kafka import ReceivedMessage, decoding
from mesh.logs import call_context, get_logger
from scheduler.domain.timers import Timer
from scheduler.mapping import purpose_name, timer_requested
from scheduler.ports import TimerStore
from scheduler.service_layer.arming import TimerArming
from scheduler.service_layer.firing import Firer

log = get_logger(__name__)


def _decode(message: ReceivedMessage) -> Timer | None:
    # The consumer span's context (mesh/kafka.py), which continues the orchestrator's trace:
    # the fire, maybe much later, continues it in turn.
    return timer_requested(message.value, tracing.current_carrier())


class TimerRequestHandler:
    """The handler of the timer-requests topic; other payloads there are ignored, and a
    message that does not decode is dropped (logged) by the runner at once."""

    def __init__(self, store: TimerStore, firer: Firer) -> None:
        self._arming = TimerArming(store, firer)
        self._handle = decoding(_decode, self._arm)

    async def __call__(self, message: ReceivedMessage) -> None:
        await self._handle(message)

    async def _arm(self, timer: Timer) -> None:
        key = timer.key
        with call_context(key.tenant_id, key.service_call_id, timer.correlation_id):
            armed = await self._arming.arm(timer)
            # Debug: the orchestrator logs every timer it asks for, and the firer every fire;
            # a line per arming was a tenth of the scheduler's CPU at a few hundred calls/s.
            log.debug(
                "timer armed" if armed else "timer already armed",
                timer_id=timer.timer_id,
                purpose=purpose_name(key.purpose),
                fire_at=key.fire_at.isoformat(),
            )
