"""The one way a loop waits longer after each failure in a row: double, up to a ceiling."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for retrying one thing: `first`, then doubling, never above `ceiling`.

    Each retry loop owns one and calls `reset` after a success, so the next failure starts
    short again. No jitter: every user retries one local dependency (Postgres, Kafka, its own
    child process) from one process, so there is no herd of clients to spread out.
    """

    first: float
    ceiling: float
    _next: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.ceiling:
            raise ValueError(f"need 0 < first <= ceiling, not {self.first} and {self.ceiling}")
        self._next = self.first

    def next(self) -> float:
        """The delay before this retry; the one after it doubles (up to the ceiling)."""
        delay = self._next
        self._next = min(delay * 2, self.ceiling)
        return delay

    def peek(self) -> float:
        """The delay `next` would return, without moving on (for a log line)."""
        return self._next

    def reset(self) -> None:
        self._next = self.first
