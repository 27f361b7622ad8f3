"""What happens to a message or an outbox row the mesh cannot handle: it is parked for an
operator, and the call it concerns is failed with a clear reason instead of staying stuck.

Without this, one bad message retried forever blocks its partition (and, through the
consumer's in-flight cap, every tenant's facts); one refused outbox row blocks the relay.

An entry point: the consumer runner's `park` hook and the relay's `refuse` hook, each
keeping the item in the parking lot (a port) and failing its call through the abandon use case.
"""

from __future__ import annotations

from mesh.kafka import ReceivedMessage
from mesh.logs import call_context, get_logger
from orchestrator.ports import OutboxRow, ParkedItem, ParkingLot
from orchestrator.service_layer.services import Orchestrator

log = get_logger(__name__)


def _call_of(key: str) -> tuple[str | None, str | None]:
    # Keys are mesh.topics.call_key: "tenant_id/service_call_id" (tenant ids have no "/").
    tenant_id, sep, service_call_id = key.partition("/")
    return (tenant_id, service_call_id) if sep and tenant_id and service_call_id else (None, None)


class Parking:
    def __init__(self, lot: ParkingLot, orchestrator: Orchestrator, consumer_group: str) -> None:
        self._lot = lot
        self._orchestrator = orchestrator
        self._source = f"consumer:{consumer_group}"

    async def park_message(self, message: ReceivedMessage, error: BaseException) -> None:
        """ConsumerRunner's `park`: the message failed its bounded tries."""
        tenant_id, service_call_id = _call_of(message.key)
        parked_id = await self._lot.park(
            ParkedItem(
                topic=message.topic,
                key=message.key,
                payload=message.value,
                error=f"{type(error).__name__}: {error}",
                source=self._source,
                tenant_id=tenant_id,
                service_call_id=service_call_id,
                kafka_partition=message.partition,
                kafka_offset=message.offset,
            )
        )
        log.error(
            "message parked",
            parked_id=parked_id,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            error=repr(error),
        )
        await self._abandon(
            tenant_id,
            service_call_id,
            f"the mesh could not apply a message about this call (parked #{parked_id})",
            # One abandon per message position, however often parking is retried.
            f"parked/{message.topic}/{message.partition}/{message.offset}",
        )

    async def refuse_outbox_row(self, row: OutboxRow, error: str) -> None:
        """OutboxRelay's `refuse`: the broker will never take this row (e.g. its size)."""
        message = row.message
        tenant_id, service_call_id = _call_of(message.key)
        parked_id = await self._lot.park(
            ParkedItem(
                topic=message.topic,
                key=message.key,
                payload=message.value,
                error=error,
                source="outbox",
                tenant_id=tenant_id,
                service_call_id=service_call_id,
                outbox_id=row.id,
            )
        )
        log.error("outbox row refused by the broker; parked", parked_id=parked_id, error=error)
        await self._abandon(
            tenant_id,
            service_call_id,
            f"the broker refused a message of this call: {error} (parked #{parked_id})",
            f"refused/outbox/{row.id}",
        )

    async def _abandon(
        self, tenant_id: str | None, service_call_id: str | None, reason: str, event_id: str
    ) -> None:
        if tenant_id is None or service_call_id is None:
            return
        with call_context(tenant_id, service_call_id, event_id):
            transition = await self._orchestrator.abandon(
                tenant_id, service_call_id, reason, event_id
            )
            if transition is not None and transition.rejection is None:
                log.error("call failed: the mesh could not carry it further", reason=reason)
