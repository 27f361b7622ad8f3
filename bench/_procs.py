"""The benchmark's view of the mesh's processes: find, kill, restart, and measure them."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from meshctl import mesh, processes
from meshctl.layout import Layout

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def pid_of(layout: Layout, service: str) -> int:
    pid = processes.running_pid(layout.run_dir / f"{service}.pid", str(layout.run_dir))
    if pid is None:
        raise RuntimeError(f"{service} is not running in {layout.run_dir}")
    return pid


def kill(layout: Layout, service: str) -> None:
    """SIGKILL: no graceful stop, no flush, exactly what a crash leaves behind."""
    pid = pid_of(layout, service)
    os.kill(pid, signal.SIGKILL)
    # Reap it when it is our child (a mesh this process started), so no zombie remains.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
        time.sleep(0.01)
    (layout.run_dir / f"{service}.pid").unlink(missing_ok=True)


def restart(layout: Layout, service: str) -> None:
    mesh.start_services(layout, only=(service,))
    mesh.wait_healthy(layout, only=(service,))


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return "Z"


@dataclass(frozen=True, slots=True)
class Sample:
    rss_mb: float
    cpu_s: float  # user + system since the process started
    at: float  # monotonic


def sample(pid: int) -> Sample:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    # Fields after the command name: utime and stime are the 12th and 13th.
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return Sample(resident_pages * _PAGE / 2**20, cpu, time.monotonic())


def cpu_percent(before: Sample, after: Sample) -> float:
    return 100.0 * (after.cpu_s - before.cpu_s) / max(after.at - before.at, 1e-9)


# Extra executors take ports executor_port + 100, + 200, ...; stop_extra_executors looks for
# this many.
MAX_EXECUTORS = 9


def _extra_executor_pid_file(layout: Layout, index: int) -> Path:
    return layout.run_dir / f"executor-{index}.pid"


def start_extra_executors(layout: Layout, count: int) -> None:
    """Executors 2..count beside the mesh's own, in the same consumer group (each its own
    member id and port), as replicas would run; they share the topic's partitions."""
    for index in range(2, count + 1):
        port = layout.executor_port + 100 * (index - 1)
        env = layout.service_env_for("executor") | {
            "GRPC_PORT": str(port),
            "KAFKA_GROUP_INSTANCE_ID": f"executor-{index}",
        }
        processes.start(
            [layout.python, "-m", "executor", "serve"],
            env,
            layout.run_dir / "logs" / f"executor-{index}.log",
            _extra_executor_pid_file(layout, index),
            str(layout.run_dir),
        )
        deadline = time.monotonic() + 60
        while not mesh.service_healthy(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"executor {index} not healthy after 60 s")
            time.sleep(0.1)


def stop_extra_executors(layout: Layout) -> None:
    for index in range(2, MAX_EXECUTORS + 1):
        processes.stop(_extra_executor_pid_file(layout, index), str(layout.run_dir))
