"""The EventQueue contract, passed by the fake (unit) and the Kafka adapter (integration)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from executor.ports import EventQueue
from mesh.ports import OutgoingMessage

ReadBack = Callable[[str, int], Awaitable[list[tuple[str, bytes]]]]


class EventQueueContract:
    """Subclasses provide the fixtures `queue`, `topic` and `read_back`."""

    async def test_acknowledged_messages_are_all_there(
        self, queue: EventQueue, topic: str, read_back: ReadBack
    ) -> None:
        messages = [OutgoingMessage(topic, "t/c1", f"m{i}".encode()) for i in range(3)]
        await queue.enqueue(messages)
        assert sorted(await read_back(topic, 3)) == [
            ("t/c1", b"m0"),
            ("t/c1", b"m1"),
            ("t/c1", b"m2"),
        ]

    async def test_hand_overs_keep_their_order_per_key_without_waiting_in_between(
        self, queue: EventQueue, topic: str, read_back: ReadBack
    ) -> None:
        # Started, then (without awaiting its ack) the result: the order the executor relies on.
        acks = []
        for i in range(20):
            for key in ("t/a", "t/b"):
                acks.append(queue.enqueue([OutgoingMessage(topic, key, f"{key}:{i}".encode())]))
        await asyncio.gather(*acks)
        records = await read_back(topic, 40)
        for key in ("t/a", "t/b"):
            values = [v for k, v in records if k == key]
            assert values == [f"{key}:{i}".encode() for i in range(20)]

    async def test_acks_keep_coming_after_many_rounds(
        self, queue: EventQueue, topic: str, read_back: ReadBack
    ) -> None:
        # Acknowledgements are settled in batches; none may be lost between batches.
        for round_ in range(5):
            acks = [
                queue.enqueue([OutgoingMessage(topic, f"t/{i}", f"{round_}:{i}".encode())])
                for i in range(50)
            ]
            await asyncio.wait_for(asyncio.gather(*acks), timeout=30)
            await asyncio.sleep(0.06)  # past one poll interval
        assert len(await read_back(topic, 250)) == 250
