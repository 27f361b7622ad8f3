"""The decode hook every consumer uses (mesh.kafka.decoding): what does not decode is parked
at once, without the retries a failing handler gets, and its key moves on; what a consumer
ignores is skipped; what decodes reaches the handler as a value, never as bytes."""

from __future__ import annotations

import asyncio

from mesh.kafka import ConsumerRunner, ReceivedMessage, UnreadableMessageError, decoding
from tests.unit.mesh.fake_kafka import FakeBroker


def decode(message: ReceivedMessage) -> int | None:
    if message.value == b"other":
        return None
    if message.value == b"unknown":
        raise UnreadableMessageError("names a purpose this consumer does not know")
    return int(message.value)  # b"garbage" raises ValueError


async def consume(
    broker: FakeBroker, produced: int, expected: int, parking: bool
) -> tuple[list[int], list[str]]:
    handled: list[int] = []
    parked: list[str] = []
    done = asyncio.Event()
    decode_calls = 0

    def counting(message: ReceivedMessage) -> int | None:
        nonlocal decode_calls
        decode_calls += 1
        return decode(message)

    async def handle(number: int) -> None:
        handled.append(number)
        if len(handled) == expected:
            done.set()

    async def park(message: ReceivedMessage, error: BaseException) -> None:
        parked.append(f"{message.offset}:{type(error).__name__}")

    runner = ConsumerRunner(
        "fake:9092",
        "g",
        [broker.topic],
        decoding(counting, handle),
        consumer_factory=broker.factory,
        park=park if parking else None,
        max_tries=5,
    )
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)
    # One decode per message: an unreadable one was not retried.
    assert decode_calls == produced
    return handled, parked


async def test_unreadable_messages_are_parked_at_once_and_the_key_moves_on() -> None:
    broker = FakeBroker()
    for value in [b"1", b"garbage", b"other", b"unknown", b"2"]:
        broker.produce("t1/a", value)

    handled, parked = await consume(broker, produced=5, expected=2, parking=True)

    assert handled == [1, 2]
    assert parked == ["1:UnreadableMessageError", "3:UnreadableMessageError"]
    assert broker.committed[("t", 0)] == 5


async def test_without_a_parking_lot_unreadable_messages_are_dropped_at_once() -> None:
    broker = FakeBroker()
    for value in [b"garbage", b"7"]:
        broker.produce("t1/a", value)

    handled, parked = await consume(broker, produced=2, expected=1, parking=False)

    assert handled == [7]
    assert parked == []
