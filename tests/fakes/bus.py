"""In-memory EventBus: keeps what was published, in order; refuses messages over a size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mesh.ports import OutgoingMessage, PublishError, Undelivered


class MessageTooLargeError(Exception):
    """The fake's refusal, standing in for Kafka's MSG_SIZE_TOO_LARGE."""


@dataclass
class InMemoryEventBus:
    published: list[OutgoingMessage] = field(default_factory=list)
    # Like a producer's message.max.bytes: a larger key plus value is refused, alone.
    max_message_bytes: int | None = None

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        undelivered: list[Undelivered] = []
        for index, message in enumerate(messages):
            size = len(message.key.encode()) + len(message.value)
            if self.max_message_bytes is not None and size > self.max_message_bytes:
                error = MessageTooLargeError(f"{size} bytes; at most {self.max_message_bytes}")
                undelivered.append(Undelivered(index, error, refused=True))
            else:
                self.published.append(message)
        if undelivered:
            raise PublishError(undelivered)

    def on(self, topic: str) -> list[tuple[str, bytes]]:
        return [(m.key, m.value) for m in self.published if m.topic == topic]
