"""The memory of finished attempts stays within its count and its bytes."""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from executor.service_layer.registry import FinishedAttempts


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
    assert finished.bytes_used <= 3000
    assert finished.result_of(("acme", "call-4", 1)) is not None
    assert finished.result_of(("acme", "call-2", 1)) is None


def test_a_newer_result_of_an_attempt_replaces_the_older() -> None:
    finished = FinishedAttempts(max_entries=10, max_bytes=10**6)
    finished.remember(("acme", "call-0", 1), b"first")
    finished.remember(("acme", "call-0", 1), b"second")
    assert finished.result_of(("acme", "call-0", 1)) == b"second"
    assert len(finished) == 1


@settings(max_examples=300, deadline=None)
@given(
    entries=st.integers(1, 8),
    capacity=st.integers(64, 600),
    steps=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 120)), max_size=80),
)
def test_results_are_the_latest_remembered_or_forgotten_and_the_newest_is_kept(
    entries: int, capacity: int, steps: list[tuple[int, int]]
) -> None:
    """Against a plain dict of what was remembered last: a lookup answers exactly that or
    nothing, the newest result is always there when it fits, and the bounds hold."""
    finished = FinishedAttempts(max_entries=entries, max_bytes=capacity)
    latest: dict[tuple[str, str, int], bytes] = {}
    for n, (call, size) in enumerate(steps):
        key = ("acme", f"call-{call}", 1 + call % 2)
        envelope = bytes([n % 251]) * size
        finished.remember(key, envelope)
        latest[key] = envelope
        fits = size + 6 + len(f"acme\0call-{call}\0{1 + call % 2}") <= capacity
        assert (finished.result_of(key) == envelope) is fits
        assert len(finished) <= entries
        assert finished.bytes_used <= capacity
        remembered = [k for k in latest if finished.result_of(k) is not None]
        assert all(finished.result_of(k) == latest[k] for k in remembered)
        assert len(remembered) == len(finished)


def test_remembering_leaves_no_python_object_per_result() -> None:
    """Results remembered during a burst must not stay behind as small Python objects: those
    would keep every arena the burst filled (docs/timing.md, the executor's memory)."""
    finished = FinishedAttempts(max_entries=20_000, max_bytes=64 * 1024 * 1024)
    envelopes = [message(400, n) for n in range(10_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n, envelope in enumerate(envelopes):
            finished.remember(("acme", f"call-{n}", 1), envelope)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(finished) == 10_000
    assert grown < 64 * 1024  # the old ordered dict of tuples and bytes grew by ~6 MB


def test_a_bound_of_zero_remembers_nothing() -> None:
    for finished in (FinishedAttempts(0, 10**6), FinishedAttempts(10, 0)):
        finished.remember(("acme", "call-0", 1), b"result")
        assert finished.result_of(("acme", "call-0", 1)) is None
        assert len(finished) == 0
