"""Lifecycle's two ways to stop: server first (the default), or draining held work first."""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from mesh.grpc_server import GrpcServer
from mesh.lifecycle import Drain, Lifecycle


class FakeServer:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.bound_port = 1234

    async def start(self) -> None:
        self.journal.append("server start")

    async def set_serving(self, serving: bool) -> None:
        self.journal.append(f"serving {serving}")

    async def stop(self, grace: float) -> None:
        self.journal.append(f"server stop {grace}")


class Held:
    """Work that ends when `release` is set, or is abandoned."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.release = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return 1

    def abandon_all(self) -> int:
        self.journal.append("abandon")
        assert self.task is not None
        self.task.cancel()
        return 1


def lifecycle(journal: list[str], held: Held, drain: Drain | None) -> Lifecycle:
    stopped = asyncio.Event()

    async def consume(_stop: asyncio.Event) -> None:
        # Like ConsumerRunner.run: returns once stopped and its held work is done.
        await stopped.wait()
        held.task = asyncio.create_task(work())
        with contextlib.suppress(asyncio.CancelledError):  # an abandoned attempt
            await held.task
        journal.append("consumer done")

    async def work() -> None:
        await held.release.wait()

    async def ends_at_once(_stop: asyncio.Event) -> None:
        return  # stands in for a stop signal

    def on_stop() -> None:
        journal.append("on_stop")
        stopped.set()

    async def close(name: str) -> None:
        journal.append(name)

    return Lifecycle(
        "svc",
        cast(GrpcServer, FakeServer(journal)),
        loops={"consumer": consume, "ends": ends_at_once},
        on_stop=[on_stop],
        closers=[lambda: close("closer")],
        grace=1.0,
        after_start=[lambda: journal.append("after_start")],
        drain=drain,
    )


async def test_without_a_drain_the_server_stops_first() -> None:
    journal: list[str] = []
    held = Held(journal)
    held.release.set()
    await lifecycle(journal, held, drain=None).run()
    assert journal == [
        "server start",
        "after_start",
        "server stop 1.0",
        "on_stop",
        "consumer done",
        "closer",
    ]


async def test_a_drain_lets_held_work_finish_before_release_and_server_stop() -> None:
    journal: list[str] = []
    held = Held(journal)
    held.release.set()

    async def release() -> None:
        journal.append("release")

    drain = Drain(held, timeout=5.0, what="attempts", release=[release])
    await lifecycle(journal, held, drain).run()
    assert journal == [
        "server start",
        "after_start",
        "serving False",
        "on_stop",
        "consumer done",
        "release",
        "server stop 1.0",
        "closer",
    ]


async def test_held_work_past_the_drain_timeout_is_abandoned() -> None:
    journal: list[str] = []
    held = Held(journal)  # never released
    await lifecycle(journal, held, Drain(held, timeout=0.01)).run()
    assert journal.index("abandon") < journal.index("consumer done") < journal.index("closer")
