"""In-memory EventBus: keeps what was published, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mesh.ports import OutgoingMessage


@dataclass
class InMemoryEventBus:
    published: list[OutgoingMessage] = field(default_factory=list)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.published.extend(messages)

    def on(self, topic: str) -> list[tuple[str, bytes]]:
        return [(m.key, m.value) for m in self.published if m.topic == topic]
