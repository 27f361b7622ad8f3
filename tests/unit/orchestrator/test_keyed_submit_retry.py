"""A keyed submit without a due time ("run now"), retried later by a client whose first try
timed out, gets its call back — it used to be refused as ALREADY_EXISTS, because the missing
due time was fingerprinted as the instant each try arrived."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.domain.errors import IdempotencyConflict
from orchestrator.ports import Accepted
from tests.unit.orchestrator.test_replay import World


async def test_a_keyed_run_now_submit_retried_later_returns_the_same_call() -> None:
    world = World()
    first = await world.orchestrator.submit(world.submission(key="order-7"), "c-1")
    world.clock.advance(timedelta(seconds=5))

    again = await world.orchestrator.submit(world.submission(key="order-7"), "c-2")

    assert isinstance(first, Accepted) and first.created
    assert isinstance(again, Accepted) and not again.created
    assert again.state.spec.service_call_id == first.state.spec.service_call_id


async def test_a_different_run_now_request_under_the_key_is_still_a_conflict() -> None:
    world = World()
    await world.orchestrator.submit(world.submission(key="order-7"), "c-1")
    other = world.submission(key="order-7", due=timedelta(minutes=1))

    assert isinstance(await world.orchestrator.submit(other, "c-2"), IdempotencyConflict)
