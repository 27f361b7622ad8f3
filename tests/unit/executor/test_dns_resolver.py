"""One tenant's slow names do not hold up another tenant's lookups (issue 12, defect 7).

The resolver function is a fake that blocks for tenant A's names until the test lets it go;
no real name is resolved, and the only connections go to a loopback server."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from executor.adapters.h1_client import H1Client
from executor.adapters.resolver import AddrInfo, Resolver
from executor.domain.egress import parse_allowlist
from executor.domain.outcome import AttemptError
from executor.ports import HttpFailure, HttpRequest, HttpResponse

LOOPBACK = parse_allowlist(["127.0.0.0/8"])
PROMPTLY = 2.0  # seconds; a lookup that waits for nothing takes milliseconds


@dataclass
class SlowForTenantA:
    """Names under slow-a.example hang until `release` is set; any other name is loopback."""

    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hanging: int = 0
    most_hanging: int = 0
    calls: list[str] = field(default_factory=list)

    def __call__(self, host: str, port: int) -> Sequence[AddrInfo]:
        with self.lock:
            self.calls.append(host)
        if host.endswith(".slow-a.example"):
            with self.lock:
                self.hanging += 1
                self.most_hanging = max(self.most_hanging, self.hanging)
            self.release.wait(timeout=30)
            with self.lock:
                self.hanging -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "temporary failure")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


@pytest.fixture
def dns() -> Iterator[SlowForTenantA]:
    fake = SlowForTenantA()
    yield fake
    fake.release.set()  # never leave a thread hanging past the test


async def test_a_tenant_with_slow_names_leaves_the_others_lookups_prompt(
    dns: SlowForTenantA,
) -> None:
    resolver = Resolver(threads=4, per_tenant=2, timeout_s=0.3, resolve=dns)
    try:
        # Tenant A asks for many distinct slow names: more than there are threads.
        slow = [
            asyncio.create_task(resolver.lookup(f"n{i}.slow-a.example", 443, "tenant-a"))
            for i in range(20)
        ]
        await asyncio.sleep(0)
        async with asyncio.timeout(PROMPTLY):
            answer = await resolver.lookup("api.tenant-b.example", 443, "tenant-b")
        assert answer[0][4] == ("127.0.0.1", 443)
        # Each of A's lookups gives up at its timeout, waiting for A's share included.
        results = await asyncio.gather(*slow, return_exceptions=True)
        assert all(isinstance(r, TimeoutError) for r in results)
        # Two threads still hang in A's lookups: they stay charged to A, so A cannot start
        # more, while B, with two threads left to it, still resolves at once.
        assert dns.most_hanging == 2
        assert resolver.lookups_held("tenant-a") == 2
        with pytest.raises(TimeoutError):
            await resolver.lookup("late.slow-a.example", 443, "tenant-a")
        async with asyncio.timeout(PROMPTLY):
            await resolver.lookup("other.tenant-b.example", 443, "tenant-b")
        assert dns.most_hanging == 2
        assert "late.slow-a.example" not in dns.calls  # never got a thread
        # When A's resolver answers, A's share comes back.
        dns.release.set()
        async with asyncio.timeout(PROMPTLY):
            await resolver.lookup("fast.tenant-a.example", 443, "tenant-a")
    finally:
        resolver.close()


async def test_concurrent_lookups_of_one_name_share_one_thread(dns: SlowForTenantA) -> None:
    resolver = Resolver(threads=4, per_tenant=1, timeout_s=5, resolve=dns)
    try:
        answers = await asyncio.gather(
            *(resolver.lookup("same.example", 80, f"tenant-{i % 3}") for i in range(10))
        )
    finally:
        resolver.close()
    assert len({tuple(a) for a in answers}) == 1
    assert dns.calls == ["same.example"]


async def test_a_failed_lookup_is_an_oserror_and_frees_the_share(dns: SlowForTenantA) -> None:
    dns.release.set()  # slow names fail at once now
    resolver = Resolver(threads=2, per_tenant=1, timeout_s=5, resolve=dns)
    try:
        for _ in range(3):
            with pytest.raises(socket.gaierror):
                await resolver.lookup("x.slow-a.example", 80, "tenant-a")
    finally:
        resolver.close()


def get(url: str, tenant_id: str, timeout_s: float = 5.0) -> HttpRequest:
    return HttpRequest("GET", url, (), b"", timedelta(seconds=timeout_s), tenant_id=tenant_id)


async def test_through_the_client_tenant_b_is_sent_while_tenant_a_waits_for_dns(
    dns: SlowForTenantA, loopback_port: int
) -> None:
    resolver = Resolver(threads=4, per_tenant=2, timeout_s=0.3, resolve=dns)
    client = H1Client(LOOPBACK, 1000, 8, resolver=resolver)
    try:
        slow = [
            asyncio.create_task(
                client.send(get(f"http://n{i}.slow-a.example:{loopback_port}/", "tenant-a"))
            )
            for i in range(20)
        ]
        await asyncio.sleep(0)
        async with asyncio.timeout(PROMPTLY):
            sent = await client.send(
                get(f"http://api.tenant-b.example:{loopback_port}/", "tenant-b")
            )
        assert isinstance(sent, HttpResponse) and sent.body == b"ok"
        failures = await asyncio.gather(*slow)
        assert {(f.error, f.detail) for f in failures if isinstance(f, HttpFailure)} == {
            (AttemptError.CONNECTION_ERROR, "dns lookup timed out")
        }
        assert len(failures) == 20
    finally:
        await client.close()
