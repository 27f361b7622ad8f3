"""A redelivered execution request is never sent twice by this executor: a held attempt is
joined, a finished one answered with its result again (issue 12, defect 4)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.fakes.executor.ports import T0
from tests.fakes.executor.world import World, received, request_envelope


async def test_a_redelivery_after_the_attempt_finished_is_not_sent_again() -> None:
    world = World()
    await world.handler(received(request_envelope(), offset=0))
    # The relay crashed between publishing and marking, or the offset was not committed yet:
    # the same ExecutionRequested (same call, attempt and event id) comes again.
    await world.handler(received(request_envelope(), offset=1))

    assert world.journal.count("http:send") == 1
    assert len(world.target.seen) == 1
    # The orchestrator still learns the outcome: the very same result goes out again (same
    # event id, so its inbox drops a copy it had applied); no second Started.
    payloads = [(e.WhichOneof("payload"), e.event_id) for e in world.bus.envelopes()]
    assert payloads == [
        ("execution_started", "evt-1"),
        ("execution_succeeded", "evt-2"),
        ("execution_succeeded", "evt-2"),
    ]
    assert world.bus.published[1] == world.bus.published[2]
    assert len(world.executions) == 0


async def test_the_outcome_published_again_is_the_failure_as_it_was() -> None:
    world = World()
    failing = request_envelope(url="http://target.example:18080/status/503?retry_after=7")
    await world.handler(received(failing, offset=0))
    await world.handler(received(failing, offset=1))
    await world.handler(received(failing, offset=2))
    assert world.journal.count("http:send") == 1
    results = world.results()
    assert [r.WhichOneof("payload") for r in results] == ["execution_failed"] * 3
    assert len({r.SerializeToString() for r in results}) == 1


async def test_a_redelivery_waits_for_the_republished_result_to_be_acknowledged() -> None:
    world = World()
    await world.handler(received(request_envelope(), offset=0))
    gate = asyncio.Event()
    world.bus.gates["execution_succeeded"] = gate
    again = asyncio.create_task(world.handler(received(request_envelope(), offset=1)))
    for _ in range(5):
        await asyncio.sleep(0)
    # Its offset may be committed only once the orchestrator can learn the outcome.
    assert not again.done()
    gate.set()
    await again
    assert world.journal.count("http:send") == 1


async def test_a_redelivery_of_an_abandoned_attempt_is_performed() -> None:
    # Abandoned (cancelled at shutdown): no result went out, so the attempt is not finished.
    world = World()
    world.sleeper.gate = asyncio.Event()
    due = T0 + timedelta(seconds=1)
    task = asyncio.create_task(world.handler(received(request_envelope(not_before=due))))
    await world.sleeper.sleeping.wait()
    world.handler.abandon_all()
    with pytest.raises(asyncio.CancelledError):
        await task
    world.sleeper.gate.set()
    await world.handler(received(request_envelope(not_before=due), offset=1))
    assert world.journal.count("http:send") == 1
    assert len(world.results()) == 1


async def test_a_redelivery_joining_a_held_attempt_is_not_sent_nor_reported_twice() -> None:
    world = World()
    world.http.gate = asyncio.Event()  # the first send hangs in flight
    sending = asyncio.Event()
    world.http.on_send = lambda _request: sending.set()
    first = asyncio.create_task(world.handler(received(request_envelope(), offset=0)))
    await sending.wait()
    second = asyncio.create_task(world.handler(received(request_envelope(), offset=1)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not second.done()
    world.http.gate.set()
    await asyncio.gather(first, second)
    assert world.journal.count("http:send") == 1
    assert len(world.results()) == 1
