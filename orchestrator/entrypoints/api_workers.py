"""Runs the orchestrator's extra API worker processes and keeps them alive (API_WORKERS).

The main orchestrator process serves the API and runs every background loop; each extra
worker is a child process (`python -m orchestrator serve-api`) that serves the public API
only, on its own port, so that Envoy can spread requests over several cores. The loops stay
in the main process alone: their one-leader (relay) and partitioned (consumer group)
guarantees do not depend on how many API workers run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mesh.backoff import Backoff
from mesh.logs import get_logger

log = get_logger(__name__)

# Set in each worker's environment: which worker it is (1..N-1; the main process is 0) and
# which process started it, so that it can make sure it never outlives that process.
WORKER_INDEX_ENV = "API_WORKER_INDEX"
PARENT_PID_ENV = "API_WORKER_PARENT_PID"

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def worker_ports(grpc_port: int, api_workers: int, base_port: int | None = None) -> tuple[int, ...]:
    """The ports of the extra workers (the main process keeps `grpc_port`): consecutive from
    `base_port`, by default `grpc_port` + 100, clear of the neighbouring services' ports
    (`grpc_port` + 1, + 2) and of the test meshes', which move in steps of 500 and 1000."""
    base = default_base_port(grpc_port) if base_port is None else base_port
    return tuple(base + i for i in range(api_workers - 1))


def default_base_port(grpc_port: int) -> int:
    return grpc_port + 100


def die_with_parent(parent_pid: int) -> None:
    """Asks Linux to send this process SIGTERM when its parent dies (even by SIGKILL), so an
    API worker is never left behind serving on its own; exits at once if the parent is
    already gone (it died before the request was made)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(error)}")
    if os.getppid() != parent_pid:
        raise SystemExit(f"the orchestrator (pid {parent_pid}) is gone; not starting")


@dataclass
class ApiWorkers:
    """One child per port; a child that exits is logged and started again after a backoff
    (reset once a child has run for `steady_s`). On stop every child gets SIGTERM (it drains
    its in-flight requests, mesh/lifecycle.py) and, after `stop_timeout_s`, SIGKILL."""

    ports: Sequence[int]
    command: Sequence[str]
    env: Mapping[str, str]
    stop_timeout_s: float = 10.0
    first_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    steady_s: float = 30.0
    # Each worker's own /metrics port, by position like `ports` (empty: metrics not served).
    # One port per process rather than prometheus_client's multiprocess mode: no shared
    # directory of mmapped files to manage, and each worker's collectors stay its own.
    metrics_ports: Sequence[int] = ()

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as workers:
            for index, port in enumerate(self.ports, start=1):
                workers.create_task(self._keep(index, port, stop), name=f"api-worker-{index}")

    async def _keep(self, index: int, port: int, stop: asyncio.Event) -> None:
        backoff = Backoff(self.first_backoff_s, self.max_backoff_s)
        while not stop.is_set():
            started = time.monotonic()
            child = await self._start(index, port)
            log.info("api worker started", worker=index, port=port, pid=child.pid)
            exited = asyncio.create_task(child.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not exited.done():
                await self._stop(index, child, exited)
                return
            log.error(
                "api worker exited; restarting it",
                worker=index,
                port=port,
                pid=child.pid,
                returncode=exited.result(),
                restart_in_s=backoff.peek(),
            )
            if time.monotonic() - started >= self.steady_s:
                backoff.reset()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.next())

    async def _start(self, index: int, port: int) -> asyncio.subprocess.Process:
        env = {
            **self.env,
            "GRPC_PORT": str(port),
            # A worker starts no workers of its own.
            "API_WORKERS": "1",
            WORKER_INDEX_ENV: str(index),
            PARENT_PID_ENV: str(os.getpid()),
            # Never the main process's METRICS_PORT: that one is taken.
            "METRICS_PORT": str(self.metrics_ports[index - 1] if self.metrics_ports else 0),
        }
        # stdout/stderr are inherited: the workers' lines go where the main process's go.
        return await asyncio.create_subprocess_exec(
            *self.command, env=env, stdin=asyncio.subprocess.DEVNULL
        )

    async def _stop(
        self, index: int, child: asyncio.subprocess.Process, exited: asyncio.Task[int]
    ) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(exited), self.stop_timeout_s)
        except TimeoutError:
            log.warning("api worker did not stop in time; killing it", worker=index)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await exited
        log.info("api worker stopped", worker=index, pid=child.pid, returncode=child.returncode)
