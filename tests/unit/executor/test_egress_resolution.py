"""Resolved addresses go through the egress policy, and the client connects only to one that
passed (lookups are faked; the only packets sent go to loopback)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import timedelta

from executor.adapters.h1_client import H1Client, Lookup, allowed_addresses
from executor.adapters.resolver import AddrInfo
from executor.domain.egress import parse_allowlist
from executor.domain.outcome import AttemptError
from executor.ports import HttpFailure, HttpRequest, HttpResponse

V4, V6 = socket.AF_INET, socket.AF_INET6
TCP = socket.SOCK_STREAM
LOOPBACK = parse_allowlist(["127.0.0.0/8", "::1/128"])


def infos(port: int, *addresses: str) -> list[AddrInfo]:
    out: list[AddrInfo] = []
    for address in addresses:
        if ":" in address:
            out.append((V6, TCP, 6, "", (address, port, 0, 0)))
        else:
            out.append((V4, TCP, 6, "", (address, port)))
    return out


def fake_dns(*addresses: str, calls: list[str] | None = None) -> Lookup:
    async def lookup(host: str, port: int, tenant_id: str) -> Sequence[AddrInfo]:
        if calls is not None:
            calls.append(host)
        return infos(port, *addresses)

    return lookup


def test_only_allowed_addresses_are_kept() -> None:
    answer = infos(443, "10.0.0.5", "93.184.215.14", "169.254.169.254", "::1", "::ffff:10.0.0.1")
    assert allowed_addresses(answer, ()) == [("93.184.215.14", 443, V4)]


def test_the_allowlist_opens_resolved_addresses() -> None:
    answer = infos(8080, "127.0.0.1", "::1", "10.0.0.1")
    assert allowed_addresses(answer, LOOPBACK) == [("127.0.0.1", 8080, V4), ("::1", 8080, V6)]


def get(url: str) -> HttpRequest:
    return HttpRequest("GET", url, (), b"", timedelta(seconds=5))


async def test_a_name_with_only_refused_addresses_is_never_connected_to() -> None:
    client = H1Client((), 1000, 2, lookup=fake_dns("127.0.0.1", "::ffff:10.0.0.1", "fd00::1"))
    result = await client.send(get("http://internal.example/"))
    assert isinstance(result, HttpFailure)
    assert result.error is AttemptError.EGRESS_DENIED


async def test_the_connection_goes_to_the_address_that_passed(loopback_port: int) -> None:
    # A rebinding answer: a refused address first, then an allowed one. The refused one is
    # dropped before any connection is tried (it is never a packet's destination).
    client = H1Client(LOOPBACK, 1000, 2, lookup=fake_dns("10.0.0.5", "127.0.0.1"))
    try:
        result = await client.send(get(f"http://rebind.example:{loopback_port}/"))
        assert isinstance(result, HttpResponse) and result.body == b"ok"
    finally:
        await client.close()


async def test_checked_answers_are_cached_briefly(loopback_port: int) -> None:
    calls: list[str] = []
    client = H1Client(LOOPBACK, 1000, 2, lookup=fake_dns("127.0.0.1", calls=calls))
    try:
        for _ in range(3):
            assert isinstance(
                await client.send(get(f"http://cached.example:{loopback_port}/")), HttpResponse
            )
    finally:
        await client.close()
    assert calls == ["cached.example"]


async def test_the_real_lookup_of_localhost_is_filtered(loopback_port: int) -> None:
    refused = await H1Client((), 1000, 2).send(get(f"http://localhost:{loopback_port}/"))
    assert isinstance(refused, HttpFailure) and refused.error is AttemptError.EGRESS_DENIED
    client = H1Client(LOOPBACK, 1000, 2)
    try:
        allowed = await client.send(get(f"http://localhost:{loopback_port}/"))
        assert isinstance(allowed, HttpResponse) and allowed.body == b"ok"
    finally:
        await client.close()
