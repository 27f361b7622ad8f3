"""The EventBus contract: the in-memory fake and the Kafka adapter both pass it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from mesh.ports import EventBus, OutgoingMessage, PublishError

# Reads back (key, value) pairs of a topic once at least `count` are there.
ReadBack = Callable[[str, int], Awaitable[list[tuple[str, bytes]]]]


class EventBusContract:
    """Subclasses provide `bus`, `topic` (a fresh, empty topic), `read_back` and `too_large`
    (a value size in bytes the bus refuses)."""

    async def test_publish_keeps_order_per_key(
        self, bus: EventBus, topic: str, read_back: ReadBack
    ) -> None:
        messages = [
            OutgoingMessage(topic, f"tenant/call-{i % 4}", f"{i % 4}:{i // 4}".encode())
            for i in range(40)
        ]
        await bus.publish(messages)
        records = await read_back(topic, 40)
        assert len(records) == 40
        for key in {m.key for m in messages}:
            assert [v for k, v in records if k == key] == [
                m.value for m in messages if m.key == key
            ]

    async def test_publish_of_nothing_is_a_no_op(
        self, bus: EventBus, topic: str, read_back: ReadBack
    ) -> None:
        await bus.publish([])
        await bus.publish([OutgoingMessage(topic, "k", b"only")])
        assert await read_back(topic, 1) == [("k", b"only")]

    async def test_a_refused_message_fails_alone(
        self, bus: EventBus, topic: str, read_back: ReadBack, too_large: int
    ) -> None:
        messages = [
            OutgoingMessage(topic, "a/1", b"before"),
            OutgoingMessage(topic, "b/2", b"x" * too_large),
            OutgoingMessage(topic, "a/1", b"after"),
        ]
        with pytest.raises(PublishError) as failed:
            await bus.publish(messages)
        [undelivered] = failed.value.undelivered
        assert undelivered.index == 1
        assert undelivered.refused
        # Both neighbours were delivered (once each), and the bus goes on publishing.
        await bus.publish([OutgoingMessage(topic, "c/3", b"later")])
        records = await read_back(topic, 3)
        assert sorted(records) == [("a/1", b"after"), ("a/1", b"before"), ("c/3", b"later")]
