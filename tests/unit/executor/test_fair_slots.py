"""Fair sharing between tenants (issue 18): a slot that frees up goes to the next tenant in
round-robin order, so one tenant's backlog never queues another tenant's attempt behind it;
and one tenant's held reports, let go together, do not hold up the loop in one piece.

Deterministic: waiters are queued in a known order and slots released one at a time; no
clock is involved (the order of hand-overs is the whole behaviour)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest

from executor.ports import HttpFailure, HttpRequest, HttpResponse, PreparedRequest
from executor.service_layer.attempts import REPORTS_PER_TURN
from executor.service_layer.slots import SendingSlots
from mesh.slots import FairSlots, KeyedLimit
from tests.fakes.executor.world import World, received, request_envelope


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


class Waiters:
    """Tasks queued for slots, noting the order in which they got one."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def add(self, slots: FairSlots, share: str, name: str) -> None:
        async def take() -> None:
            await slots.acquire(share)
            self.order.append(name)

        self.tasks[name] = asyncio.create_task(take())


async def full(slots: int) -> FairSlots:
    fair = FairSlots(slots)
    for _ in range(slots):
        await fair.acquire("holder")
    return fair


async def test_a_lone_call_gets_the_next_slot_ahead_of_another_tenants_thousand() -> None:
    fair = await full(1)
    waiters = Waiters()
    for i in range(1000):
        waiters.add(fair, "a", f"a{i}")
    await settle()
    fair.release()  # A's backlog is being served ...
    await settle()
    waiters.add(fair, "b", "b")  # ... when B's one attempt starts waiting
    await settle()
    fair.release()
    await settle()
    assert waiters.order == ["a0", "b"]  # not behind a1..a999
    for _ in range(999):
        fair.release()
    await settle()
    assert waiters.order[2:] == [f"a{i}" for i in range(1, 1000)]  # A's own stay in order
    assert fair.waiting() == {}


async def test_queued_together_the_lone_call_waits_one_hand_over_at_most() -> None:
    fair = await full(1)
    waiters = Waiters()
    for i in range(1000):
        waiters.add(fair, "a", f"a{i}")
    waiters.add(fair, "b", "b")
    await settle()
    fair.release()
    fair.release()
    await settle()
    assert waiters.order == ["a0", "b"]


async def test_three_tenants_are_served_round_robin() -> None:
    fair = await full(2)
    waiters = Waiters()
    for share, count in (("a", 6), ("b", 3), ("c", 2)):
        for i in range(count):
            waiters.add(fair, share, f"{share}{i}")
    await settle()
    for _ in range(11):
        fair.release()
        await settle()
    assert waiters.order == [
        *("a0", "b0", "c0"),
        *("a1", "b1", "c1"),
        *("a2", "b2"),  # C has no more
        *("a3", "a4", "a5"),  # only A left: its own, in order
    ]


async def test_a_slot_with_nobody_waiting_is_free_again() -> None:
    fair = await full(1)
    fair.release()
    await asyncio.wait_for(fair.acquire("x"), 1)  # no waiting: the free slot is taken at once
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fair.acquire("y"), 0.01)


async def test_a_tenants_only_waiter_cancelled_leaves_the_ring() -> None:
    fair = await full(1)
    waiters = Waiters()
    for i in range(3):
        waiters.add(fair, "a", f"a{i}")
    waiters.add(fair, "b", "b")
    await settle()
    waiters.tasks["b"].cancel()
    await settle()
    assert fair.waiting() == {"a": 3}  # B is gone, not kept in the ring
    for _ in range(3):
        fair.release()
        await settle()
    assert waiters.order == ["a0", "a1", "a2"]
    fair.release()
    await asyncio.wait_for(fair.acquire("c"), 1)  # and the slot is free again afterwards


async def test_the_last_waiter_of_the_tenant_just_served_cancelled() -> None:
    fair = await full(1)
    waiters = Waiters()
    waiters.add(fair, "a", "a0")
    waiters.add(fair, "a", "a1")
    waiters.add(fair, "b", "b0")
    await settle()
    fair.release()  # a0 served; A (a1 left) waits to rejoin the ring behind B
    await settle()
    waiters.tasks["a1"].cancel()
    await settle()
    assert fair.waiting() == {"b": 1}
    fair.release()
    await settle()
    assert waiters.order == ["a0", "b0"]


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_ran_is_passed_on() -> None:
    fair = await full(1)
    waiters = Waiters()
    waiters.add(fair, "a", "a0")
    waiters.add(fair, "b", "b0")
    await settle()
    fair.release()  # handed to a0, which has not run yet ...
    waiters.tasks["a0"].cancel()  # ... and is cancelled before it does
    await settle()
    assert waiters.order == ["b0"]
    assert waiters.tasks["a0"].cancelled()


async def test_a_cancelled_waiter_skipped_by_a_release_is_not_counted_twice() -> None:
    fair = await full(1)
    waiters = Waiters()
    waiters.add(fair, "a", "a0")
    waiters.add(fair, "a", "a1")
    await settle()
    waiters.tasks["a0"].cancel()
    fair.release()  # before a0's cancellation ran: the release skips it, a1 gets the slot
    await settle()
    assert waiters.order == ["a1"]
    assert fair.waiting() == {}
    fair.release()
    await asyncio.wait_for(fair.acquire("a"), 1)


async def test_a_keyed_limit_shares_one_keys_slots_fairly() -> None:
    limit = KeyedLimit(1)
    order: list[str] = []
    gate = asyncio.Event()

    async def take(name: str, share: str) -> None:
        await limit.acquire("host", share)
        order.append(name)
        await gate.wait()
        limit.release("host")

    tasks = [asyncio.create_task(take(f"a{i}", "a")) for i in range(4)]
    tasks.append(asyncio.create_task(take("b0", "b")))
    await settle()
    gate.set()
    await asyncio.gather(*tasks)
    assert order == ["a0", "a1", "b0", "a2", "a3"]
    assert len(limit) == 0


# -- the executor's sending slots ------------------------------------------------------------


class Holder:
    """Takes a sending slot and keeps it until released; notes its tenant when it got in."""

    def __init__(self, slots: SendingSlots, tenant: str, host: str, entered: list[str]) -> None:
        self.inside = asyncio.Event()
        self.release = asyncio.Event()
        self.task = asyncio.create_task(self._run(slots, tenant, host, entered))

    async def _run(self, slots: SendingSlots, tenant: str, host: str, entered: list[str]) -> None:
        async with slots.slot(tenant, host):
            entered.append(tenant)
            self.inside.set()
            await self.release.wait()


async def test_the_global_cap_goes_to_the_waiting_tenant_next_and_caps_still_hold() -> None:
    # Tenant A spreads over many hosts, so its attempts reach the global cap; B's one attempt
    # targets a host of its own.
    slots = SendingSlots(total=4, per_tenant=6, per_host=10)
    entered: list[str] = []
    a = [Holder(slots, "a", f"a{i}.example:443", entered) for i in range(20)]
    await settle()
    assert entered == ["a"] * 4 and slots.in_flight == 4
    assert slots.waiting() == {"a": 2}  # A's other 14 wait at its own tenant cap
    a[0].release.set()  # A's backlog is being served ...
    await settle()
    b = Holder(slots, "b", "b.example:443", entered)  # ... when B's attempt comes
    await settle()
    assert slots.waiting() == {"a": 2, "b": 1}
    holders = [h for h in (*a, b) if h is not a[0]]
    while holders:
        done = next(h for h in holders if h.inside.is_set())
        done.release.set()
        holders.remove(done)
        await settle()
        assert slots.in_flight <= 4
        assert all(held <= 6 for held in slots.tenants.holding().values())
    # B got the first slot freed after it started waiting, ahead of A's other 15.
    assert entered.index("b") == 5
    await asyncio.gather(*(h.task for h in (*a, b)))
    assert slots.in_flight == 0 and len(slots.tenants) == 0 and len(slots.hosts) == 0


async def test_a_shared_host_goes_to_the_waiting_tenant_next() -> None:
    slots = SendingSlots(total=100, per_tenant=100, per_host=2)
    entered: list[str] = []
    a = [Holder(slots, "a", "shared.example:443", entered) for i in range(10)]
    await settle()
    a[0].release.set()
    await settle()
    b = Holder(slots, "b", "shared.example:443", entered)
    await settle()
    assert entered == ["a", "a", "a"]
    a[1].release.set()
    await settle()
    assert entered == ["a", "a", "a", "b"]  # not behind A's other seven
    for h in (*a, b):
        h.release.set()
    await asyncio.gather(*(h.task for h in (*a, b)))
    assert slots.hosts.holding() == {}


# -- through the attempt use case ---------------------------------------------------------------


class GatedHttp:
    """An HttpClient whose requests each wait until the test lets one through."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gates: list[asyncio.Event] = []

    def prepare(self, request: HttpRequest) -> PreparedRequest:
        return PreparedRequest(request)

    async def send(self, request: HttpRequest | PreparedRequest) -> HttpResponse | HttpFailure:
        if isinstance(request, PreparedRequest):
            request = request.request
        self.sent.append(request.url)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return HttpResponse(200, (), b"")

    def answer_one(self) -> None:
        next(g for g in self.gates if not g.is_set()).set()


def _perform(world: World, tenant: str, call: str, offset: int) -> asyncio.Task[None]:
    envelope = request_envelope(url=f"http://{call}.example/")
    envelope.tenant_id = tenant
    envelope.service_call_id = call
    return asyncio.create_task(world.handler(received(envelope, offset=offset)))


async def test_one_tenants_backlog_does_not_queue_another_tenants_attempt() -> None:
    world = World(limits=SendingSlots(total=2, per_tenant=50, per_host=50))
    http = GatedHttp()
    world.handler._http = http
    backlog = [_perform(world, "a", f"a{i}", i) for i in range(30)]
    await settle()
    assert len(http.sent) == 2  # the global cap
    http.answer_one()  # A's backlog is being served ...
    await settle()
    lone = _perform(world, "b", "b0", 100)  # ... when B's attempt comes
    await settle()
    http.answer_one()
    await settle()
    assert http.sent[3] == "http://b0.example/"  # the next send is B's, not A's fourth
    while len(world.results()) < 31:
        http.answer_one()
        await settle()
    await asyncio.gather(*backlog, lone)


class OneSlowHttp:
    """Answers at once, except the request to slow.example, which waits to be let go."""

    def __init__(self) -> None:
        self.slow = asyncio.Event()
        self.sending = asyncio.Event()

    def prepare(self, request: HttpRequest) -> PreparedRequest:
        return PreparedRequest(request)

    async def send(self, request: HttpRequest | PreparedRequest) -> HttpResponse | HttpFailure:
        if isinstance(request, PreparedRequest):
            request = request.request
        if "slow" in request.url:
            self.sending.set()
            await self.slow.wait()
        return HttpResponse(200, (), b"")


async def test_held_reports_go_in_portions_so_the_loop_serves_others_between() -> None:
    # 600 attempts finish while one is still sending: their reports wait. When it is done,
    # they go REPORTS_PER_TURN per turn of the loop, not all in one turn (another tenant's
    # attempt due meanwhile would wait behind all of them).
    world = World(report_defer=timedelta(seconds=30), started_after=timedelta(seconds=30))
    http = OneSlowHttp()
    world.handler._http = http
    slow = _perform(world, "a", "slow", 0)
    await http.sending.wait()
    quick = [_perform(world, "a", f"q{i}", i + 1) for i in range(600)]
    for _ in range(50):
        await asyncio.sleep(0)
    assert world.results() == []  # all held while the slow one is sending
    http.slow.set()
    seen: list[int] = []
    while len(seen) < 200 and (not seen or seen[-1] < 601):
        await asyncio.sleep(0)
        seen.append(len(world.results()))
    assert seen[-1] == 601
    steps = sorted({n for n in seen if 0 < n < 601})
    assert len(steps) >= 2, seen  # reported over several turns
    assert all(b - a <= REPORTS_PER_TURN + 1 for a, b in itertools.pairwise([0, *steps, 601]))
    await asyncio.gather(slow, *quick)
