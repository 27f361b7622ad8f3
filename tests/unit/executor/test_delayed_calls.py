"""DelayedCalls: callbacks a fixed delay after they were added, from one loop timer."""

from __future__ import annotations

import asyncio

from executor.service_layer.timing import DelayedCalls


async def test_a_callback_runs_no_earlier_than_its_delay() -> None:
    loop = asyncio.get_running_loop()
    calls = DelayedCalls(0.02, tick_s=0.01)
    ran = asyncio.Event()
    ran_at: list[float] = []

    def run() -> None:
        ran_at.append(loop.time())
        ran.set()

    added_at = loop.time()
    calls.add(run)
    await asyncio.wait_for(ran.wait(), 5)
    assert ran_at[0] - added_at >= 0.02


async def test_a_cancelled_callback_never_runs_and_the_others_run_in_order() -> None:
    calls = DelayedCalls(0.01, tick_s=0.005)
    order: list[int] = []
    last = asyncio.Event()
    calls.add(lambda: order.append(1))
    cancelled = calls.add(lambda: order.append(2))
    calls.add(lambda: order.append(3))
    calls.add(last.set)
    cancelled.cancel()
    await asyncio.wait_for(last.wait(), 5)
    assert order == [1, 3]


async def test_the_timer_stops_when_nothing_waits_and_starts_again_for_a_new_callback() -> None:
    calls = DelayedCalls(0.005, tick_s=0.005)
    first, second = asyncio.Event(), asyncio.Event()
    calls.add(first.set)
    await asyncio.wait_for(first.wait(), 5)
    assert calls._timer is None  # the run that emptied the queue left no timer
    calls.add(second.set)
    assert calls._timer is not None
    await asyncio.wait_for(second.wait(), 5)


async def test_a_callback_that_raises_does_not_stop_the_others() -> None:
    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
    calls = DelayedCalls(0.005, tick_s=0.005)
    later = asyncio.Event()

    def broken() -> None:
        raise RuntimeError("boom")

    calls.add(broken)
    calls.add(later.set)  # due with it, so left in the queue when it raised
    await asyncio.wait_for(later.wait(), 5)
    assert [type(e) for e in errors] == [RuntimeError]
    loop.set_exception_handler(None)
