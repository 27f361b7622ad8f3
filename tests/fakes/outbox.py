"""In-memory Outbox: the relay's view of rows that a transaction appended."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mesh.ports import OutgoingMessage
from orchestrator.ports import OutboxRow
from tests.fakes.clock import FakeClock


@dataclass
class _Entry:
    row: OutboxRow
    published_at: datetime | None = None


@dataclass
class InMemoryOutbox:
    clock: FakeClock = field(default_factory=FakeClock)
    entries: list[_Entry] = field(default_factory=list)

    def append(self, messages: list[OutgoingMessage]) -> None:
        start = len(self.entries) + 1
        self.entries.extend(_Entry(OutboxRow(start + i, m)) for i, m in enumerate(messages))

    async def pending(self, limit: int) -> list[OutboxRow]:
        return [e.row for e in self.entries if e.published_at is None][:limit]

    async def mark_published(self, ids: list[int]) -> None:
        for entry in self.entries:
            if entry.row.id in ids and entry.published_at is None:
                entry.published_at = self.clock.now()

    async def prune(self, older_than: timedelta) -> int:
        cutoff = self.clock.now() - older_than
        keep = [e for e in self.entries if e.published_at is None or e.published_at > cutoff]
        pruned = len(self.entries) - len(keep)
        self.entries = keep
        return pruned
