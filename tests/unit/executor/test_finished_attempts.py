"""The memory of finished attempts stays within its count and its bytes."""

from __future__ import annotations

from executor.registry import FinishedAttempts


def message(size: int, n: int = 0) -> bytes:
    return str(n).encode() * size


def test_finished_attempts_forget_the_oldest_past_their_count() -> None:
    finished = FinishedAttempts(max_entries=2, max_bytes=10**9)
    for n in range(3):
        finished.remember(("acme", f"call-{n}", 1), message(10, n))
    assert finished.result_of(("acme", "call-0", 1)) is None
    assert finished.result_of(("acme", "call-2", 1)) == message(10, 2)
    assert len(finished) == 2


def test_finished_attempts_forget_the_oldest_past_their_bytes() -> None:
    finished = FinishedAttempts(max_entries=100, max_bytes=3000)
    for n in range(5):
        finished.remember(("acme", f"call-{n}", 1), message(1000, n))
    # Each costs its bytes plus a fixed overhead: two fit in 3000, not three.
    assert len(finished) == 2
    assert finished.bytes <= 3000
    assert finished.result_of(("acme", "call-4", 1)) is not None
    assert finished.result_of(("acme", "call-2", 1)) is None
