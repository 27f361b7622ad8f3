"""ConsumerRunner with an in-memory consumer: poison messages are parked after bounded tries,
outages are retried, one share at its cap never stops the others, a lost assignment is not
committed, and a fatal consumer error leads to a new consumer (issue #12, defects 0 and 5)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import psycopg
import pytest

from mesh.kafka import ConsumerFailedError, ConsumerRunner, ReceivedMessage, tenant_share
from tests.unit.mesh.fake_kafka import FakeBroker

Handler = Any


def runner_for(broker: FakeBroker, handler: Handler, **options: Any) -> ConsumerRunner:
    return ConsumerRunner(
        "fake:9092", "g", [broker.topic], handler, consumer_factory=broker.factory, **options
    )


async def run_until(runner: ConsumerRunner, done: asyncio.Event, timeout: float = 10.0) -> None:
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        runner.stop()
        await asyncio.wait_for(task, timeout)


async def test_a_poison_message_is_parked_and_its_key_and_partition_move_on() -> None:
    broker = FakeBroker()
    for key, value in [
        ("t1/a", b"a0"),
        ("t1/a", b"poison"),
        ("t1/b", b"b0"),
        ("t1/a", b"a3"),
        ("t1/a", b"a4"),
    ]:
        broker.produce(key, value)
    handled: dict[str, list[bytes]] = defaultdict(list)
    parked: list[tuple[int, BaseException]] = []
    tries = 0
    done = asyncio.Event()

    async def handler(message: ReceivedMessage) -> None:
        nonlocal tries
        if message.value == b"poison":
            tries += 1
            raise ValueError("cannot decode")
        handled[message.key].append(message.value)
        if sum(map(len, handled.values())) == 4:
            done.set()

    async def park(message: ReceivedMessage, error: BaseException) -> None:
        parked.append((message.offset, error))

    await run_until(runner_for(broker, handler, park=park, max_tries=3), done)

    assert handled == {"t1/a": [b"a0", b"a3", b"a4"], "t1/b": [b"b0"]}
    assert tries == 3
    assert [(offset, type(error)) for offset, error in parked] == [(1, ValueError)]
    assert broker.committed[("t", 0)] == 5  # the committed offset passed the parked message


async def test_without_a_parking_lot_a_poison_message_is_dropped_after_max_tries() -> None:
    broker = FakeBroker()
    broker.produce("t1/a", b"poison")
    broker.produce("t1/a", b"a1")
    done = asyncio.Event()

    async def handler(message: ReceivedMessage) -> None:
        if message.value == b"poison":
            raise KeyError("unknown enum value")
        done.set()

    await run_until(runner_for(broker, handler, max_tries=2), done)
    assert broker.committed[("t", 0)] == 2


async def test_an_outage_is_retried_past_max_tries_and_never_parked() -> None:
    broker = FakeBroker()
    broker.produce("t1/a", b"m0")
    failures = 0
    done = asyncio.Event()
    parked: list[ReceivedMessage] = []

    async def handler(_message: ReceivedMessage) -> None:
        nonlocal failures
        if failures < 4:
            failures += 1
            raise psycopg.OperationalError("connection refused")
        done.set()

    async def park(message: ReceivedMessage, _error: BaseException) -> None:
        parked.append(message)

    await run_until(runner_for(broker, handler, park=park, max_tries=2), done)
    assert failures == 4
    assert parked == []
    assert broker.committed[("t", 0)] == 1


async def test_parking_during_an_outage_is_retried() -> None:
    broker = FakeBroker()
    broker.produce("t1/a", b"poison")
    park_calls = 0
    done = asyncio.Event()

    async def handler(_message: ReceivedMessage) -> None:
        raise ValueError("bad")

    async def park(_message: ReceivedMessage, _error: BaseException) -> None:
        nonlocal park_calls
        park_calls += 1
        if park_calls == 1:
            raise psycopg.OperationalError("the database is restarting")
        done.set()

    await run_until(runner_for(broker, handler, park=park, max_tries=1), done)
    assert park_calls == 2
    assert broker.committed[("t", 0)] == 1


async def test_a_share_at_its_cap_waits_without_stopping_other_shares() -> None:
    """Defect 5: tenant A's slow calls filled the global cap and the consumer stopped for all."""
    broker = FakeBroker()
    for n in range(12):
        broker.produce(f"A/k{n % 3}", f"A{n}".encode())
    for n in range(5):
        broker.produce(f"B/k{n}", f"B{n}".encode())
    release = asyncio.Event()
    started_a: list[bytes] = []
    finished_a: dict[str, list[bytes]] = defaultdict(list)
    handled_b: list[bytes] = []
    b_done = asyncio.Event()
    a_done = asyncio.Event()

    async def handler(message: ReceivedMessage) -> None:
        if tenant_share(message) == "A":
            started_a.append(message.value)
            await release.wait()
            finished_a[message.key].append(message.value)
            if sum(map(len, finished_a.values())) == 12:
                a_done.set()
        else:
            handled_b.append(message.value)
            if len(handled_b) == 5:
                b_done.set()

    # A global cap of 8 would be filled by A alone without per-share caps.
    runner = runner_for(
        broker, handler, max_in_flight=8, share_of=tenant_share, max_in_flight_per_share=2
    )
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(b_done.wait(), 10)
    assert handled_b == [f"B{n}".encode() for n in range(5)]
    assert started_a == [b"A0", b"A1"]
    assert runner.waiting == 10
    release.set()
    await asyncio.wait_for(a_done.wait(), 10)
    runner.stop()
    await asyncio.wait_for(task, 10)
    for k in range(3):
        assert finished_a[f"A/k{k}"] == [f"A{n}".encode() for n in range(k, 12, 3)]
    assert runner.waiting == 0
    assert broker.committed[("t", 0)] == 17


async def test_waiting_messages_count_toward_the_byte_cap() -> None:
    broker = FakeBroker()
    for n in range(6):
        broker.produce(f"A/k{n}", b"x" * 100)
    broker.produce("B/k", b"b")
    release = asyncio.Event()
    a_started = 0
    two_started = asyncio.Event()
    b_handled = asyncio.Event()

    async def handler(message: ReceivedMessage) -> None:
        nonlocal a_started
        if tenant_share(message) == "A":
            a_started += 1
            if a_started == 2:
                two_started.set()
            await release.wait()
        else:
            b_handled.set()

    # 2 running + 1 waiting of A hold 300 bytes: polling stops, B is not even fetched.
    runner = runner_for(
        broker,
        handler,
        share_of=tenant_share,
        max_in_flight_per_share=2,
        max_bytes_in_flight=300,
    )
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(two_started.wait(), 10)
    for _ in range(20):  # a negative check: give the loop passes to (wrongly) go on
        await asyncio.sleep(0.005)
    assert runner.waiting == 1
    assert not b_handled.is_set()
    release.set()
    await asyncio.wait_for(b_handled.wait(), 10)
    runner.stop()
    await asyncio.wait_for(task, 10)


async def test_a_lost_assignment_is_not_committed() -> None:
    """Defect 0: a commit on a lost assignment is what gets a static member fenced."""
    broker = FakeBroker()
    broker.produce("t1/a", b"m0")
    handled = asyncio.Event()

    async def handler(_message: ReceivedMessage) -> None:
        handled.set()

    # One commit at the first pass (nothing to commit yet), then none for an hour.
    runner = runner_for(broker, handler, commit_interval_s=3600)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(handled.wait(), 10)
    broker.current.lose()
    # The loss is served by the runner's next poll.
    assert await asyncio.to_thread(broker.current.served.wait, 10)
    runner.stop()
    await asyncio.wait_for(task, 10)
    assert broker.commits == []


async def test_a_revoked_assignment_commits_what_finished() -> None:
    broker = FakeBroker()
    broker.produce("t1/a", b"m0")
    handled = asyncio.Event()

    async def handler(_message: ReceivedMessage) -> None:
        handled.set()

    runner = runner_for(broker, handler, commit_interval_s=3600)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(handled.wait(), 10)
    await asyncio.sleep(0)  # the handler's task finishes after its last step
    broker.current.revoke()
    assert await asyncio.to_thread(broker.current.served.wait, 10)
    runner.stop()
    await asyncio.wait_for(task, 10)
    assert broker.commits == [[("t", 0, 1)]]


async def test_a_fatal_error_builds_a_new_consumer_and_health_says_so() -> None:
    """Defect 0: after a fatal error the consumer never applied a message again."""
    broker = FakeBroker()
    broker.produce("t1/a", b"before")
    health: list[bool] = []
    handled: list[bytes] = []
    first = asyncio.Event()
    after = asyncio.Event()
    healthy_again = asyncio.Event()

    def on_health(healthy: bool) -> None:
        health.append(healthy)
        if healthy:
            healthy_again.set()

    async def handler(message: ReceivedMessage) -> None:
        handled.append(message.value)
        (after if message.value == b"after" else first).set()

    runner = runner_for(broker, handler, on_health=on_health)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(first.wait(), 10)
    assert runner.healthy
    broker.current.fail_fatally()
    await asyncio.wait_for(healthy_again.wait(), 10)  # the new consumer was assigned
    broker.produce("t1/a", b"after")
    await asyncio.wait_for(after.wait(), 10)
    runner.stop()
    await asyncio.wait_for(task, 10)

    assert handled == [b"before", b"after"]
    assert health == [False, True]
    assert runner.rebuilds == 1
    assert broker.consumers[0].closed
    assert broker.consumers[1].closed


async def test_a_consumer_that_cannot_be_rebuilt_makes_run_fail() -> None:
    broker = FakeBroker()
    broker.produce("t1/a", b"m0")
    handled = asyncio.Event()

    async def handler(_message: ReceivedMessage) -> None:
        handled.set()

    runner = runner_for(broker, handler, max_rebuilds=2)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(handled.wait(), 10)
    broker.failing_creations = 100
    broker.current.fail_fatally()
    with pytest.raises(ConsumerFailedError):
        await asyncio.wait_for(task, 10)
    assert not runner.healthy
    assert broker.consumers[0].closed


def test_tenant_share_is_the_key_before_the_first_slash() -> None:
    message = ReceivedMessage("t", 0, 0, "tenant-1/call/with/slashes", b"")
    assert tenant_share(message) == "tenant-1"
    assert tenant_share(ReceivedMessage("t", 0, 0, "no-slash", b"")) == "no-slash"


@pytest.mark.parametrize("cancel_on_revoke", [True, False])
async def test_handlers_of_a_revoked_partition_are_cancelled_when_asked(
    cancel_on_revoke: bool,
) -> None:
    """Issue 12, defect 4: an executor kept performing attempts of partitions it had lost, so
    the new owner and the old one both sent them."""
    broker = FakeBroker()
    broker.produce("t1/a", b"held")
    started = asyncio.Event()
    cancelled = asyncio.Event()
    release = asyncio.Event()

    async def handler(_message: ReceivedMessage) -> None:
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runner = runner_for(broker, handler, cancel_on_revoke=cancel_on_revoke)
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(started.wait(), 10)
    broker.current.revoke()
    assert await asyncio.to_thread(broker.current.served.wait, 10)
    if cancel_on_revoke:
        await asyncio.wait_for(cancelled.wait(), 10)
    else:
        await asyncio.sleep(0.05)  # a cancel, had one been asked, is one loop pass away
        assert not cancelled.is_set()
    release.set()
    runner.stop()
    await asyncio.wait_for(task, 10)
    assert broker.commits == []  # nothing of the revoked partition was committed as done
