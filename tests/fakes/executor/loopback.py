"""A loopback aiohttp server for a Target, counting every TCP connection it accepts."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.executor.ports import Seen, Target


@dataclass
class LoopbackServer:
    port: int
    connections: int
    _server: asyncio.Server
    _runner: web.AppRunner

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        self._server.close()
        await self._runner.cleanup()
        await self._server.wait_closed()


async def serve_target(target: Target) -> LoopbackServer:
    async def handle(request: web.Request) -> web.StreamResponse:
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers)
        body = await request.read()
        reply = await target.handle(Seen(request.method, request.raw_path, headers, body))
        return web.Response(
            status=reply.status, headers=CIMultiDict(reply.headers), body=reply.body
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    protocol_factory = runner.server
    assert protocol_factory is not None
    loop = asyncio.get_running_loop()

    def accept() -> asyncio.BaseProtocol:
        holder.connections += 1
        return protocol_factory()

    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    holder = LoopbackServer(port=port, connections=0, _server=server, _runner=runner)
    return holder


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
