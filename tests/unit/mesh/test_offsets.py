"""A partition's committable offset never passes a message still in flight."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from mesh.offsets import PartitionProgress


def test_nothing_started_nothing_to_commit() -> None:
    assert PartitionProgress().committable() is None


def test_commits_up_to_the_lowest_unfinished_offset() -> None:
    progress = PartitionProgress()
    for offset in (10, 11, 12, 13):
        progress.start(offset)
    progress.finish(12)
    progress.finish(13)
    assert progress.committable() == 10  # 10 and 11 still in flight
    progress.finish(10)
    assert progress.committable() == 11
    progress.finish(11)
    assert progress.committable() == 14
    assert progress.in_flight == 0


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=200, unique=True))
def test_committed_offset_is_always_below_every_unfinished_message(offsets: list[int]) -> None:
    offsets.sort()
    progress = PartitionProgress()
    for offset in offsets:
        progress.start(offset)
    order = offsets[:]
    random.Random(len(offsets)).shuffle(order)
    finished: set[int] = set()
    for offset in order:
        progress.finish(offset)
        finished.add(offset)
        position = progress.committable()
        unfinished = [o for o in offsets if o not in finished]
        if position is not None:
            # Committing `position` means "everything below is done": that must be true.
            assert all(o >= position for o in unfinished)
    assert progress.committable() == offsets[-1] + 1


def test_memory_stays_small_with_one_stuck_offset_and_many_finished_after_it() -> None:
    """Issue #12 defect 11: one stuck message kept every later offset in memory."""
    progress = PartitionProgress()
    progress.start(0)  # stuck: never finishes
    for offset in range(1, 100_001):
        progress.start(offset)
        progress.finish(offset)
        assert progress.tracked <= 200
    assert progress.committable() is None  # 0 is still in flight: nothing may be committed
    assert progress.in_flight == 1
    progress.finish(0)
    assert progress.committable() == 100_001
    assert progress.in_flight == 0


def test_compaction_keeps_the_lowest_unfinished_offset() -> None:
    progress = PartitionProgress()
    for offset in range(10, 1_000):
        progress.start(offset)
    for offset in range(11, 1_000):
        if offset != 500:
            progress.finish(offset)
    assert progress.committable() == 10
    assert progress.in_flight == 2
    progress.finish(10)
    assert progress.committable() == 500
    progress.finish(500)
    assert progress.committable() == 1_000
