"""The timing bench's target: a minimal loopback HTTP/1.1 server that notes when each request
arrives.

It stands for a target on another machine, so the CPU it takes on the bench machine is
CPU the mesh would have had. meshctl's sink (aiohttp, used by the tests and the demo) cost
about half a core at 7k requests/s, beside two executors on the same two cores; this one parses
with llhttp (httptools, which the executor uses too) on a bare asyncio protocol and answers
every request `200 {}`, keep-alive. The arrival time is taken when the request's head has been
parsed, as meshctl's sink takes it when its handler starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httptools

from meshctl.sink import Arrival

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class _Connection(asyncio.Protocol):
    def __init__(self, sink: FastSink) -> None:
        self._sink = sink
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._arrived_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    # llhttp callbacks

    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_headers_complete(self) -> None:
        self._arrived_at = time.time()

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        method = self._parser.get_method().decode()
        query = (parsed.query or b"").decode()
        self._sink.arrived(Arrival(method, parsed.path.decode(), query, (), b"", self._arrived_at))
        if self._transport is not None:
            self._transport.write(_ANSWER)
            if not self._parser.should_keep_alive():
                self._transport.close()


class FastSink:
    """What the bench needs of meshctl.sink.Sink: start, stop, url, on_arrival, arrivals
    (headers and bodies are not kept)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.arrivals: list[Arrival] = []
        self.on_arrival: Callable[[Arrival], None] | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, 0, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def arrived(self, arrival: Arrival) -> None:
        self.arrivals.append(arrival)
        if self.on_arrival is not None:
            self.on_arrival(arrival)
