"""Sending slots: the caps on requests in flight, overall, per tenant and per target host,
shared fairly between tenants."""

from __future__ import annotations

from mesh.slots import FairSlots, KeyedLimit


class SendingSlots:
    """The slots an attempt needs before its request may go out.

    Taken narrowest first (tenant, then host, then the global one): an attempt that waits for
    its tenant's or its host's slot holds no global slot meanwhile, so a tenant over its cap or
    a slow host leaves the global capacity to everyone else.

    Fair sharing between tenants (issue 18): where tenants meet, at a host's slots and at the
    global ones, a slot that frees up goes to the next tenant in round-robin order that has an
    attempt waiting (FairSlots), not to the oldest waiter; one tenant's backlog delays another
    tenant's attempt by at most about one hand-over per tenant waiting there, instead of by
    the whole queue in front of it. A tenant's own attempts stay first come first served.

    This bounds sockets and requests, not memory: attempts waiting here stay in the consumer's
    held set, whose size (MAX_HELD) is what makes the Kafka consumer stop fetching.
    """

    def __init__(self, total: int, per_tenant: int, per_host: int) -> None:
        self._total = FairSlots(total)
        self.in_flight = 0
        self.tenants = KeyedLimit(per_tenant)
        self.hosts = KeyedLimit(per_host)

    def slot(self, tenant_id: str, host: str) -> _Slot:
        return _Slot(self, tenant_id, host)

    async def _acquire(self, tenant_id: str, host: str) -> None:
        await self.tenants.acquire(tenant_id)
        try:
            await self.hosts.acquire(host, tenant_id)
            try:
                await self._total.acquire(tenant_id)
            except BaseException:
                self.hosts.release(host)
                raise
        except BaseException:
            self.tenants.release(tenant_id)
            raise
        self.in_flight += 1

    def waiting(self) -> dict[str, int]:
        """Attempts waiting for a global slot, per tenant (tests; the caps' own view)."""
        return self._total.waiting()

    def _release(self, tenant_id: str, host: str) -> None:
        self.in_flight -= 1
        self._total.release()
        self.hosts.release(host)
        self.tenants.release(tenant_id)


class _Slot:
    """`async with slots.slot(tenant, host)`: a plain class rather than a generator-based
    context manager, because every attempt takes one and the generator machinery (three
    nested ones before) was ~5% of an attempt's CPU."""

    __slots__ = ("_host", "_slots", "_tenant")

    def __init__(self, slots: SendingSlots, tenant_id: str, host: str) -> None:
        self._slots = slots
        self._tenant = tenant_id
        self._host = host

    async def __aenter__(self) -> None:
        await self._slots._acquire(self._tenant, self._host)

    async def __aexit__(self, *_exc: object) -> None:
        self._slots._release(self._tenant, self._host)
