"""A loopback HTTP sink that records what reaches it: for the demo, the tests and benchmarks.

`python -m meshctl.sink --port 9999` serves until interrupted and prints one JSON line per
request. Paths choose the answer: /status/<code> answers that code, /slow/<ms> waits first,
/big/<bytes> sends a body that long; anything else answers 200 with a small JSON body.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Arrival:
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    arrived_at: float  # wall clock, seconds since the epoch

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Sink:
    host: str = "127.0.0.1"
    port: int = 0
    arrivals: list[Arrival] = field(default_factory=list)
    on_arrival: Callable[[Arrival], None] | None = None
    # Paths answered 500 until they are taken out again: a target that is down, then fixed
    # (a failed call is replayed against it once it works:
    # tests/e2e/test_dead_letters_and_replay.py).
    failing: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived_at = time.time()
        body = await request.read()
        arrival = Arrival(
            request.method,
            request.path,
            request.query_string,
            tuple(request.headers.items()),
            body,
            arrived_at,
        )
        self.arrivals.append(arrival)
        if self.on_arrival is not None:
            self.on_arrival(arrival)
        async with self._changed:
            self._changed.notify_all()
        return await self._answer(request)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if request.path in self.failing:
            return web.json_response({"status": 500}, status=500)
        parts = request.path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "status" and parts[1].isdigit():
            headers = {}
            if len(parts) >= 4 and parts[2] == "retry-after":
                headers["Retry-After"] = parts[3]
            return web.json_response(
                {"status": int(parts[1])}, status=int(parts[1]), headers=headers
            )
        if len(parts) >= 2 and parts[0] == "slow" and parts[1].isdigit():
            await asyncio.sleep(int(parts[1]) / 1000)
        if len(parts) >= 2 and parts[0] == "big" and parts[1].isdigit():
            return web.Response(body=b"x" * int(parts[1]))
        return web.json_response({"ok": True, "path": request.path})

    async def wait_for(
        self, predicate: Callable[[list[Arrival]], bool], timeout: float = 30.0
    ) -> list[Arrival]:
        """Waits until the arrivals satisfy `predicate`; woken by each arrival, not by a timer."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.arrivals)), timeout
            )
        return self.arrivals

    def matching(self, path: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.path == path]


async def _serve(port: int) -> None:
    def show(arrival: Arrival) -> None:
        print(
            json.dumps(
                {
                    "at": arrival.arrived_at,
                    "method": arrival.method,
                    "path": arrival.path,
                    "idempotency_key": arrival.header("Idempotency-Key"),
                    "body": arrival.body.decode(errors="replace")[:200],
                }
            ),
            flush=True,
        )

    sink = Sink(port=port, on_arrival=show)
    await sink.start()
    print(f"sink listening on {sink.url('/')}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9999)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
