"""The queue's rate arithmetic (GCRA, domain/queues.release_times) with an injected clock,
ordering-key sequencing (may_start) and queue validation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.domain.queues import (
    KeyHistory,
    OrderingFailurePolicy,
    Queue,
    QueueState,
    may_start,
    queue_gate,
    release_times,
    validate_ordering_key,
    validate_queue,
)

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEAD = timedelta(seconds=2)


def _drain(
    rate: float, burst: int, calls: int, tick: timedelta, start: datetime = T0
) -> list[datetime]:
    """A dispatcher polling every `tick`, releasing what is within the lead each time."""
    sent: list[datetime] = []
    tat = None
    now = start
    while len(sent) < calls:
        times, tat = release_times(tat, now, rate, burst, calls - len(sent), LEAD)
        sent += times
        now += tick
    return sent


def _max_in_window(times: list[datetime], window: timedelta) -> int:
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.parametrize(("rate", "burst"), [(5.0, 1), (5.0, 5), (0.5, 1), (100.0, 10), (3.3, 2)])
def test_never_faster_than_the_rate_over_any_window(rate: float, burst: int) -> None:
    times = _drain(rate, burst, 200, timedelta(milliseconds=100))
    assert times == sorted(times)
    for seconds in (0.5, 1, 3, 10):
        window = timedelta(seconds=seconds)
        # A window [t, t + W) holds at most burst + W * rate sends (plus one boundary).
        assert _max_in_window(times, window) <= burst + seconds * rate + 1e-9


def test_fifty_calls_at_five_a_second_take_about_ten_seconds() -> None:
    times = _drain(5.0, 1, 50, timedelta(milliseconds=100))
    assert times[0] == T0
    assert times[-1] - times[0] == timedelta(seconds=49 / 5)
    assert all(b - a == timedelta(seconds=0.2) for a, b in itertools.pairwise(times))


def test_a_burst_goes_at_once_after_idle_then_the_rate() -> None:
    times, tat = release_times(None, T0, 2.0, 4, 6, LEAD)
    assert times[:4] == [T0] * 4
    assert times[4:] == [T0 + timedelta(seconds=0.5), T0 + timedelta(seconds=1)]
    assert tat == T0 + timedelta(seconds=3)


def test_an_idle_queue_refills_its_burst() -> None:
    _, tat = release_times(None, T0, 1.0, 3, 3, LEAD)
    later = T0 + timedelta(seconds=10)
    times, _ = release_times(tat, later, 1.0, 3, 3, LEAD)
    assert times == [later] * 3
    # Half refilled: one token back after one second.
    times, _ = release_times(tat, T0 + timedelta(seconds=1), 1.0, 3, 2, LEAD)
    assert times == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]


def test_only_calls_within_the_horizon_are_given_a_time() -> None:
    times, tat = release_times(None, T0, 1.0, 1, 10, LEAD)
    assert times == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert tat == T0 + timedelta(seconds=3)
    none, same = release_times(tat + timedelta(seconds=5), T0, 1.0, 1, 10, LEAD)
    assert none == [] and same == tat + timedelta(seconds=5)


def test_no_rate_sends_everything_now_and_keeps_the_state() -> None:
    assert release_times(None, T0, 0.0, 1, 3, LEAD) == ([T0] * 3, None)
    assert release_times(T0, T0, 5.0, 1, 0, LEAD) == ([], T0)


def _key(busy: str | None = None, head: str | None = None, failed: str | None = None) -> KeyHistory:
    return KeyHistory(busy=busy, head=head, last_finished_failed=failed)


def test_one_call_of_a_key_at_a_time_in_due_order() -> None:
    block = OrderingFailurePolicy.BLOCK
    assert may_start("b", None, False, _key(head="a"), block) == "a"
    assert may_start("a", None, False, _key(head="a"), block) is None
    assert may_start("a", None, False, _key(busy="z", head="a"), block) == "z"


def test_a_held_retry_is_the_head_and_goes() -> None:
    block = OrderingFailurePolicy.BLOCK
    # The retrying call is itself the key's busy call; calls due before it do not overtake.
    assert may_start("r", None, True, _key(busy="r", head="a"), block) is None


def test_block_holds_the_key_after_a_failure_until_a_replay_of_it() -> None:
    block = OrderingFailurePolicy.BLOCK
    key = _key(head="b", failed="a")
    assert may_start("b", None, False, key, block) == "a"
    # The replay of the failed call goes first, whatever its due time.
    assert may_start("a2", "a", False, _key(head="b", failed="a"), block) is None
    # Not a replay of some other call.
    assert may_start("x", "other", False, key, block) == "a"


def test_skip_goes_on_after_a_failure() -> None:
    skip = OrderingFailurePolicy.SKIP
    assert may_start("b", None, False, _key(head="b", failed="a"), skip) is None


def test_the_gate_names_the_reason() -> None:
    paused = Queue(tenant_id="t", queue_id="q", state=QueueState.PAUSED)
    limited = Queue(tenant_id="t", queue_id="q", max_dispatches_per_second=5)
    busy = Queue(tenant_id="t", queue_id="q", max_concurrent_dispatches=2)
    assert queue_gate(None, "default", None) is None
    assert queue_gate(Queue(tenant_id="t", queue_id="q"), "q", None) is None
    assert queue_gate(paused, "q", "k") == 'held by paused queue "q"'
    assert queue_gate(None, "default", "k") is not None
    assert queue_gate(limited, "q", None) == 'waiting for queue "q"\'s rate limit'
    assert queue_gate(busy, "q", None) == 'waiting for queue "q"\'s concurrency limit'


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"queue_id": "Bad"}, "queue.queue_id"),
        ({"queue_id": "-x"}, "queue.queue_id"),
        ({"queue_id": "a" * 64}, "queue.queue_id"),
        ({"max_dispatches_per_second": -1.0}, "queue.max_dispatches_per_second"),
        ({"max_dispatches_per_second": float("nan")}, "queue.max_dispatches_per_second"),
        ({"max_dispatches_per_second": float("inf")}, "queue.max_dispatches_per_second"),
        ({"max_dispatches_per_second": 1e-9}, "queue.max_dispatches_per_second"),
        ({"max_burst_size": -1}, "queue.max_burst_size"),
        ({"max_burst_size": 10**6}, "queue.max_burst_size"),
        ({"max_concurrent_dispatches": -5}, "queue.max_concurrent_dispatches"),
    ],
)
def test_queue_validation(changes: dict[str, object], field: str) -> None:
    queue = Queue(**{"tenant_id": "t", "queue_id": "ok-1", **changes})  # type: ignore[arg-type]
    assert [v.field for v in validate_queue(queue)] == [field]


def test_a_good_queue_is_valid() -> None:
    queue = Queue(tenant_id="t", queue_id="a" * 63, max_dispatches_per_second=5, max_burst_size=3)
    assert validate_queue(queue) == []


@pytest.mark.parametrize("key", ["", "x" * 257, "a\x00b", "tab\there", "new\nline"])
def test_bad_ordering_keys(key: str) -> None:
    assert validate_ordering_key(key, "service_call.ordering_key")


@pytest.mark.parametrize("key", ["k", "customer/42", "ünï cödé", "x" * 256])
def test_good_ordering_keys(key: str) -> None:
    assert validate_ordering_key(key, "service_call.ordering_key") == []
