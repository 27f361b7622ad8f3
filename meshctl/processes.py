"""Start and stop the mesh's processes by pid file, never by name."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def _marker_matches(pid: int, marker: str) -> bool:
    # A pid can be recycled: only signal a process that still carries this mesh's marker.
    for source in ("environ", "cmdline"):
        try:
            if marker.encode() in Path(f"/proc/{pid}/{source}").read_bytes():
                return True
        except OSError:
            continue
    return False


def running_pid(pid_file: Path, marker: str) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid if _marker_matches(pid, marker) else None


def started_and_alive(pid_file: Path) -> bool:
    """For a process this run just started: alive and not a zombie. (The marker check of
    `running_pid` guards against recycled pids when stopping; right after a start the pid is
    ours, and /proc/<pid>/cmdline reads empty for a moment while the process execs.)"""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    return _alive(pid)


def start(
    argv: Sequence[str], env: Mapping[str, str], log_file: Path, pid_file: Path, marker: str
) -> int:
    existing = running_pid(pid_file, marker)
    if existing is not None:
        return existing
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            _at_normal_priority(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the shell that ran `make up` leaves it alone
        )
    pid_file.write_text(f"{process.pid}\n")
    return process.pid


def _at_normal_priority(argv: Sequence[str]) -> list[str]:
    """A caller running at a raised priority (the timing bench raises its own for its sink)
    must not hand it to every service it starts; each asks for its own (EXECUTOR_NICE,
    EXECUTOR_RT_PRIORITY). `chrt --other` and `nice` exec the command (same pid) and only
    lower the priority, which needs no privilege."""
    argv = list(argv)
    raised = -os.getpriority(os.PRIO_PROCESS, 0)
    if raised > 0:
        argv = ["nice", "-n", str(raised), *argv]
    if os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK != os.SCHED_OTHER:
        argv = ["chrt", "--other", "0", *argv]
    return argv


def stop(pid_file: Path, marker: str, timeout: float = 15.0) -> bool:
    """SIGTERM, wait for a graceful exit, SIGKILL after `timeout`. True if it was running."""
    pid = running_pid(pid_file, marker)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child, so it does not linger as a zombie that kill(0) sees.
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return stat.rsplit(")", 1)[-1].split()[0]


def run(argv: Sequence[str], env: Mapping[str, str], what: str) -> None:
    result = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )


def with_marker(marker: str, word: str) -> list[int]:
    """The live processes whose command line holds `word` and that carry `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # it ended meanwhile
        if word.encode() in command.split(b"\0") and _marker_matches(pid, marker) and _alive(pid):
            found.append(pid)
    return found


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}
