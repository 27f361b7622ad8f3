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
    monkeypatch.setattr(os, "sched_getscheduler", lambda _pid: os.SCHED_FIFO)
    assert processes._at_normal_priority(["python"]) == ["chrt", "--other", "0", "python"]


def _can_use_fifo() -> bool:
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"
    run = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True)
    return run.returncode == 0


def test_a_real_time_caller_starts_services_under_the_ordinary_policy() -> None:
    if not _can_use_fifo():
        pytest.skip("SCHED_FIFO needs root or CAP_SYS_NICE")
    # The caller raises itself as the timing bench does, then starts a "service" the way
    # meshctl does; the service reports the policy it runs under.
    script = (
        "import os, subprocess, sys; from meshctl import processes; "
        "os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)); "
        "report = [sys.executable, '-c', 'import os; print(os.sched_getscheduler(0))']; "
        "subprocess.run(processes._at_normal_priority(report), check=True)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ
    ).stdout
    assert int(out) == os.SCHED_OTHER


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


def test_the_executor_applies_its_real_time_priority() -> None:
    script = (
        "import os; from executor.main import ask_for_priority; ask_for_priority(0, 2); "
        "print(os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ
    ).stdout.split()
    if _can_use_fifo():
        assert out == [str(os.SCHED_FIFO), "2"]
    else:  # refused: it warned and runs as before
        assert out == [str(os.SCHED_OTHER), "0"]


async def test_delivery_reports_are_settled_in_chunks() -> None:
    queue = KafkaEventQueue("127.0.0.1:1", "chunk-test")  # no broker needed: nothing produced
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(SETTLE_CHUNK + 5)]
    queue._reports.extend((f, None) for f in futures)
    assert queue._settle_reports(SETTLE_CHUNK) == 5
    assert sum(f.done() for f in futures) == SETTLE_CHUNK
    assert queue._settle_reports(SETTLE_CHUNK) == 0
    assert all(f.done() and f.exception() is None for f in futures)
