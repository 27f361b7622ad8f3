"""Concurrency caps: one tenant or one slow host cannot take every slot."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from executor.ports import HttpFailure, HttpRequest, HttpResponse, PreparedRequest
from executor.service_layer.slots import SendingSlots as Limits
from mesh.slots import FifoSlots, KeyedLimit
from tests.fakes.executor.world import World, received, request_envelope


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


class Holder:
    """Takes a slot and keeps it until released; records when it got in."""

    def __init__(self, limits: Limits, tenant: str, host: str) -> None:
        self.inside = asyncio.Event()
        self.release = asyncio.Event()
        self.task = asyncio.create_task(self._run(limits, tenant, host))

    async def _run(self, limits: Limits, tenant: str, host: str) -> None:
        async with limits.slot(tenant, host):
            self.inside.set()
            await self.release.wait()


async def test_a_tenant_at_its_cap_leaves_the_global_slots_to_others() -> None:
    limits = Limits(total=4, per_tenant=2, per_host=10)
    greedy = [Holder(limits, "greedy", f"h{i}") for i in range(5)]
    await settle()
    assert sum(h.inside.is_set() for h in greedy) == 2
    assert limits.in_flight == 2  # the three waiting hold no global slot
    others = [Holder(limits, f"t{i}", "h") for i in range(2)]
    await settle()
    assert all(o.inside.is_set() for o in others)
    assert limits.in_flight == 4
    for h in (*greedy, *others):
        h.release.set()
    await asyncio.gather(*(h.task for h in (*greedy, *others)))
    assert limits.in_flight == 0
    assert len(limits.tenants) == 0 and len(limits.hosts) == 0  # nothing kept per key


async def test_a_slow_host_at_its_cap_does_not_block_other_hosts() -> None:
    limits = Limits(total=4, per_tenant=10, per_host=1)
    slow = [Holder(limits, "t", "slow.example:443") for _ in range(3)]
    await settle()
    assert sum(h.inside.is_set() for h in slow) == 1
    assert limits.hosts.in_use("slow.example:443") == 1
    fast = Holder(limits, "t", "fast.example:443")
    await settle()
    assert fast.inside.is_set()
    for h in (*slow, fast):
        h.release.set()
    await asyncio.gather(*(h.task for h in (*slow, fast)))


async def test_waiters_get_in_first_come_first_served() -> None:
    limit = KeyedLimit(1)
    order: list[int] = []
    gate = asyncio.Event()

    async def take(i: int) -> None:
        async with limit.hold("k"):
            order.append(i)
            await gate.wait()

    tasks = [asyncio.create_task(take(i)) for i in range(4)]
    await settle()
    gate.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


class BlockingHttp:
    """An HttpClient whose requests hang until released, per host."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()

    def prepare(self, request: HttpRequest) -> PreparedRequest:
        return PreparedRequest(request)

    async def send(self, request: HttpRequest | PreparedRequest) -> HttpResponse | HttpFailure:
        if isinstance(request, PreparedRequest):
            request = request.request
        self.sent.append(request.url)
        if "slow" in request.url:
            await self.release.wait()
        return HttpResponse(200, (), b"")


async def test_the_handler_sends_only_within_the_caps() -> None:
    world = World(limits=Limits(total=8, per_tenant=8, per_host=2))
    http = BlockingHttp()
    world.handler._http = http
    slow = [
        asyncio.create_task(
            world.handler(
                received(request_envelope(url=f"http://slow.example/{i}", attempt=i + 1), offset=i)
            )
        )
        for i in range(4)
    ]
    await settle()
    assert len(http.sent) == 2  # the host's cap
    fast = asyncio.create_task(
        world.handler(received(request_envelope(url="http://fast.example/", attempt=9)))
    )
    await asyncio.wait_for(fast, timeout=1)
    assert "http://fast.example/" in http.sent
    http.release.set()
    await asyncio.gather(*slow)
    assert len(world.results()) == 5


async def test_started_says_when_the_slot_was_free_not_when_it_was_due() -> None:
    world = World(limits=Limits(total=1, per_tenant=1, per_host=1))
    http = BlockingHttp()
    world.handler._http = http
    first = asyncio.create_task(
        world.handler(received(request_envelope(url="http://slow.example/1", attempt=1)))
    )
    await settle()
    second = asyncio.create_task(
        world.handler(received(request_envelope(url="http://slow.example/2", attempt=2)))
    )
    await settle()
    world.clock.advance(timedelta(seconds=3))
    http.release.set()
    await asyncio.gather(first, second)
    starts = [
        e.execution_started.start_time.ToDatetime()
        for e in world.bus.envelopes()
        if e.WhichOneof("payload") == "execution_started"
    ]
    assert starts[1] - starts[0] == timedelta(seconds=3)


async def test_a_waiter_cancelled_in_the_queue_is_skipped() -> None:
    slots = FifoSlots(1)
    await slots.acquire()
    gone = asyncio.create_task(slots.acquire())
    after = asyncio.create_task(slots.acquire())
    await settle()
    gone.cancel()
    await settle()
    slots.release()
    await asyncio.wait_for(after, 5)  # the slot went past the cancelled waiter
    assert gone.cancelled()
    slots.release()
    await asyncio.wait_for(slots.acquire(), 5)  # and it is free again afterwards


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_ran_is_passed_on() -> None:
    slots = FifoSlots(1)
    await slots.acquire()
    unlucky = asyncio.create_task(slots.acquire())
    next_in_line = asyncio.create_task(slots.acquire())
    await settle()
    slots.release()  # handed to `unlucky`, which has not run yet ...
    unlucky.cancel()  # ... and is cancelled before it does
    await asyncio.wait_for(next_in_line, 5)
    assert unlucky.cancelled()
