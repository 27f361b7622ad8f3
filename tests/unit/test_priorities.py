"""Process priorities: the executor asks for its own, and meshctl never hands a raised one on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from executor.adapters.kafka_queue import SETTLE_CHUNK, KafkaEventQueue
from meshctl import processes


def test_services_start_at_normal_priority_from_a_raised_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "getpriority", lambda _which, _who: -10)
    assert processes._at_normal_priority(["python", "-m", "executor"]) == [
        "nice",
        "-n",
        "10",
        "python",
        "-m",
        "executor",
    ]
    monkeypatch.setattr(os, "getpriority", lambda _which, _who: 0)
    assert processes._at_normal_priority(["python"]) == ["python"]


def test_the_executor_applies_its_nice_value() -> None:
    # In a child process: a raised nice value cannot be undone without privileges.
    script = (
        "import os; from executor.main import ask_for_priority; ask_for_priority(3); "
        "print(os.getpriority(os.PRIO_PROCESS, 0))"
    )
    before = os.getpriority(os.PRIO_PROCESS, 0)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ
    ).stdout
    assert int(out) == min(before + 3, 19)


async def test_delivery_reports_are_settled_in_chunks() -> None:
    queue = KafkaEventQueue("127.0.0.1:1", "chunk-test")  # no broker needed: nothing produced
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(SETTLE_CHUNK + 5)]
    queue._reports.extend((f, None) for f in futures)
    assert queue._settle_reports(SETTLE_CHUNK) == 5
    assert sum(f.done() for f in futures) == SETTLE_CHUNK
    assert queue._settle_reports(SETTLE_CHUNK) == 0
    assert all(f.done() and f.exception() is None for f in futures)
