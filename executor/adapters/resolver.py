"""Name lookups for the HTTP client: threads of their own, a timeout per lookup, and a share
of those threads per tenant, so that one tenant's slow DNS cannot hold up everyone's.

getaddrinfo blocks, so it runs in a thread, and a thread cannot be stopped: a lookup whose
caller gave up keeps its thread until the resolver answers (the system resolver's own
timeouts and retries, up to tens of seconds). On asyncio's default pool, a tenant whose names
resolve slowly (many distinct ones: a lookup is per name) filled every thread, and every other
tenant's lookups, and anything else run there, queued behind them.

Here a tenant holds at most `per_tenant` lookups at once, counted until each one's thread is
free again, not until its caller stopped waiting; its further lookups wait for one of its own
to end (in the event loop, holding no thread), and every lookup gives up after `timeout_s`,
waiting included. Concurrent lookups of one name share one thread (charged to the tenant that
started it). A pool of `threads` then serves at least `threads / per_tenant` tenants with slow
names before anyone else waits. Answers are cached by the client (h1_client.py), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from mesh.slots import KeyedLimit

AddrInfo = tuple[
    socket.AddressFamily,
    socket.SocketKind,
    int,
    str,
    tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
]
# A blocking lookup, as socket.getaddrinfo for a TCP connection: run in the resolver's threads.
Resolve = Callable[[str, int], Sequence[AddrInfo]]

DNS_THREADS = 8
DNS_LOOKUPS_PER_TENANT = 2
DNS_TIMEOUT_S = 5.0


def system_resolve(host: str, port: int) -> Sequence[AddrInfo]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)


class Resolver:
    """Build it inside the running loop; `close()` stops the threads once their lookups end."""

    def __init__(
        self,
        *,
        threads: int = DNS_THREADS,
        per_tenant: int = DNS_LOOKUPS_PER_TENANT,
        timeout_s: float = DNS_TIMEOUT_S,
        resolve: Resolve = system_resolve,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="executor-dns")
        self._tenants = KeyedLimit(per_tenant)
        self._timeout = timeout_s
        self._resolve = resolve
        self._running: dict[tuple[str, int], asyncio.Task[Sequence[AddrInfo]]] = {}

    async def lookup(self, host: str, port: int, tenant_id: str = "") -> Sequence[AddrInfo]:
        """The name's addresses; OSError (socket.gaierror) if it does not resolve, TimeoutError
        if no answer came within the timeout."""
        key = (host, port)
        running = self._running.get(key)
        if running is None:
            running = asyncio.get_running_loop().create_task(
                self._lookup(host, port, tenant_id), name=f"dns {host}"
            )
            self._running[key] = running
            running.add_done_callback(lambda task: self._forget(key, task))
        # Shielded: a caller that gives up (its attempt timed out) leaves the others waiting.
        return await asyncio.shield(running)

    def lookups_held(self, tenant_id: str) -> int:
        """Lookups of this tenant that hold a thread, or are queued for one."""
        return self._tenants.in_use(tenant_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _forget(self, key: tuple[str, int], task: asyncio.Task[Sequence[AddrInfo]]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have given up already

    async def _lookup(self, host: str, port: int, tenant_id: str) -> Sequence[AddrInfo]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            await self._tenants.acquire(tenant_id)
            try:
                work = self._pool.submit(self._resolve, host, port)
            except BaseException:
                self._tenants.release(tenant_id)
                raise
            # The tenant's share is given back when the thread is free, not when the wait
            # ends: a lookup cancelled before it started ends at once, one that started runs on.
            work.add_done_callback(lambda _: _in_loop(loop, self._tenants.release, tenant_id))
            return await asyncio.wrap_future(work, loop=loop)


def _in_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[[str], None], tenant_id: str
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed while the lookup ran
        loop.call_soon_threadsafe(callback, tenant_id)
