"""The Outbox contract: the in-memory fake and the Postgres adapter both pass it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from mesh.ports import OutgoingMessage
from orchestrator.ports import Outbox

# Appends rows as a committing transaction would.
Append = Callable[[list[OutgoingMessage]], Awaitable[None]]


def messages(n: int, start: int = 0) -> list[OutgoingMessage]:
    return [
        OutgoingMessage("topic", f"k{i % 3}", f"m{i}".encode()) for i in range(start, start + n)
    ]


class OutboxContract:
    """Subclasses provide `outbox` and `append` over the same empty outbox."""

    async def test_pending_is_unpublished_rows_oldest_first(
        self, outbox: Outbox, append: Append
    ) -> None:
        await append(messages(5))
        first = await outbox.pending(3)
        assert [r.message.value for r in first] == [b"m0", b"m1", b"m2"]
        assert [r.id for r in first] == sorted(r.id for r in first)
        await outbox.mark_published([r.id for r in first])
        rest = await outbox.pending(10)
        assert [r.message.value for r in rest] == [b"m3", b"m4"]

    async def test_unmarked_rows_come_back(self, outbox: Outbox, append: Append) -> None:
        await append(messages(2))
        assert len(await outbox.pending(10)) == 2
        # A relay that published and died before marking leaves them pending: at least once.
        assert len(await outbox.pending(10)) == 2

    async def test_prune_keeps_unpublished_rows(self, outbox: Outbox, append: Append) -> None:
        await append(messages(4))
        rows = await outbox.pending(2)
        await outbox.mark_published([r.id for r in rows])
        assert await outbox.prune(timedelta(hours=1)) == 0
        assert await outbox.prune(timedelta(0)) == 2
        assert [r.message.value for r in await outbox.pending(10)] == [b"m2", b"m3"]
