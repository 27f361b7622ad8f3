"""A service process's life: serve, run background loops, stop gracefully, exit honestly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mesh.grpc_server import GrpcServer
from mesh.logs import configure_logging, get_logger

log = get_logger(__name__)

Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
Closer = Callable[[], Awaitable[None]]


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so a composition root can drain before exiting."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def supervise(background: list[asyncio.Task[None]], stop: asyncio.Event) -> bool:
    """Waits until a stop is asked or a background task ends; returns True if one crashed.

    Background loops retry their own transient failures, so one that ends on its own is a
    bug or a lost dependency: the process should stop and exit non-zero, so that whatever
    supervises it (Kubernetes, an operator) restarts it rather than leaving it half alive.
    """
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([stopping, *background], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    crashed = False
    for task in background:
        if task.done() and (task.cancelled() or task.exception() is not None):
            error = None if task.cancelled() else task.exception()
            log.error("background task ended unexpectedly", task=task.get_name(), error=repr(error))
            crashed = True
    stop.set()
    return crashed


class HeldWork(Protocol):
    """What a draining loop holds (the executor's attempts)."""

    def __len__(self) -> int:
        """How much is held right now."""
        ...

    def abandon_all(self) -> int:
        """Cancels everything held; returns how much that was."""
        ...


async def drain(
    task: asyncio.Future[Any], held: HeldWork, timeout: float, what: str = "work"
) -> None:
    """Lets a stopped loop finish its held work for up to `timeout` seconds, then abandons the
    rest (the executor's: their offsets stay uncommitted, so another executor gets them
    again, and the orchestrator's lease or watchdog covers an attempt cut off mid-request)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
    if not task.done():
        log.warning(f"drain timeout; abandoning held {what}", abandoned=held.abandon_all())
    with contextlib.suppress(Exception):
        await task


@dataclass(frozen=True)
class Drain:
    """A stop for loops that hold work (the executor's attempts): the gRPC server keeps
    answering (ListExecutions shows what is still held) while its health says NOT_SERVING and
    the loops finish their held work for up to `timeout` seconds; what is left is abandoned
    (`drain`). Then `release` closes what that work used, and only then the server stops."""

    held: HeldWork
    timeout: float
    what: str = "work"  # the held work's name in the drain-timeout log line
    release: Sequence[Closer] = ()


@dataclass
class Lifecycle:
    """Starts the server, runs each loop until SIGTERM/SIGINT or until one ends, then stops
    the server (letting in-flight RPCs finish), signals the loops, awaits them and closes
    resources in order. Exits non-zero when a loop crashed (see `supervise`).

    With a `drain` the stop goes the Drain's way instead: not serving, signal the loops,
    drain them, release, then stop the server and close; its start and end are logged with
    how much was held, since a drain can take its whole timeout."""

    name: str
    server: GrpcServer
    loops: dict[str, Loop]
    on_stop: Sequence[Callable[[], None]] = ()
    closers: Sequence[Closer] = ()
    grace: float = 5.0
    # Called once the server is up, right before the loops start (the executor's GC tuning,
    # which freezes what start-up built).
    after_start: Sequence[Callable[[], None]] = ()
    # More fields on the "<name> ready" line.
    ready: Mapping[str, object] = field(default_factory=dict)
    drain: Drain | None = None

    async def run(self) -> None:
        stop = stop_on_signals()
        await self.server.start()
        for started in self.after_start:
            started()
        tasks = [asyncio.create_task(loop(stop), name=name) for name, loop in self.loops.items()]
        log.info(f"{self.name} ready", port=self.server.bound_port, **self.ready)
        crashed = await supervise(tasks, stop)
        if self.drain is None:
            await self._stop(tasks)
        else:
            await self._drain(tasks, self.drain)
        if crashed:
            raise SystemExit(1)

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        log.info(f"{self.name} stopping")
        await self.server.stop(grace=self.grace)
        for signal_stop in self.on_stop:
            signal_stop()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        for close in self.closers:
            await close()

    async def _drain(self, tasks: list[asyncio.Task[None]], how: Drain) -> None:
        log.info(f"{self.name} stopping", held=len(how.held))
        await self.server.set_serving(False)
        for signal_stop in self.on_stop:
            signal_stop()
        # All loops under one deadline: draining them one by one would wait `timeout` each.
        await drain(asyncio.gather(*tasks, return_exceptions=True), how.held, how.timeout, how.what)
        for close in how.release:
            await close()
        await self.server.stop(grace=self.grace)
        for close in self.closers:
            await close()
        log.info(f"{self.name} stopped")


def service_main(
    name: str,
    log_level: str,
    serve: Callable[[], Coroutine[Any, Any, None]],
    database_url: str | None = None,
    migrations: Path | None = None,
    argv: Sequence[str] | None = None,
    commands: Mapping[str, Callable[[], Coroutine[Any, Any, None]]] | None = None,
) -> None:
    """`python -m <service> [serve|migrate|<one of commands>]`."""
    commands = commands or {}
    args = list(sys.argv[1:] if argv is None else argv)
    configure_logging(name, log_level)
    command = args[0] if args else "serve"
    if command == "migrate" and migrations is not None and database_url is not None:
        # Imported here: SQLAlchemy and Alembic cost a service that has no database (the
        # executor) ~25 MB of memory it keeps for its whole life.
        from mesh.db import migrate  # noqa: PLC0415

        migrate(database_url, migrations, name)
    elif command == "serve":
        asyncio.run(serve())
    elif command in commands:
        asyncio.run(commands[command]())
    else:
        usage = "|".join(["serve", *(["migrate"] if migrations is not None else []), *commands])
        raise SystemExit(f"usage: python -m {name} [{usage}], not {command!r}")
