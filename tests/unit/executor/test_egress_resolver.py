"""The aiohttp resolver filters resolved addresses through the policy (lookups are faked)."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import pytest

from executor.adapters.http_client import AddrInfo, EgressDeniedError, EgressResolver, Lookup
from executor.domain.egress import parse_allowlist

V4, V6 = socket.AF_INET, socket.AF_INET6
TCP = socket.SOCK_STREAM


def fake_dns(*addresses: str) -> Lookup:
    async def lookup(host: str, port: int, family: socket.AddressFamily) -> Sequence[AddrInfo]:
        infos: list[AddrInfo] = []
        for address in addresses:
            if ":" in address:
                infos.append((V6, TCP, 6, "", (address, port, 0, 0)))
            else:
                infos.append((V4, TCP, 6, "", (address, port)))
        return infos

    return lookup


async def test_only_allowed_addresses_are_returned() -> None:
    resolver = EgressResolver((), fake_dns("10.0.0.5", "93.184.215.14", "169.254.169.254", "::1"))
    results = await resolver.resolve("rebind.example", 443, socket.AF_UNSPEC)
    assert [(r["host"], r["port"], r["hostname"]) for r in results] == [
        ("93.184.215.14", 443, "rebind.example")
    ]


async def test_a_host_with_only_refused_addresses_raises() -> None:
    resolver = EgressResolver((), fake_dns("127.0.0.1", "::ffff:10.0.0.1", "fd00::1"))
    with pytest.raises(EgressDeniedError):
        await resolver.resolve("internal.example", 80, socket.AF_UNSPEC)


async def test_the_allowlist_opens_resolved_addresses() -> None:
    allow = parse_allowlist(["127.0.0.0/8", "::1/128"])
    resolver = EgressResolver(allow, fake_dns("127.0.0.1", "::1", "10.0.0.1"))
    results = await resolver.resolve("localhost", 8080, socket.AF_UNSPEC)
    assert [(r["host"], r["family"]) for r in results] == [("127.0.0.1", V4), ("::1", V6)]


async def test_the_real_lookup_of_localhost_is_filtered() -> None:
    with pytest.raises(EgressDeniedError):
        await EgressResolver(()).resolve("localhost", 80, socket.AF_UNSPEC)
    allowed = await EgressResolver(parse_allowlist(["127.0.0.0/8", "::1/128"])).resolve(
        "localhost", 80, socket.AF_INET
    )
    assert {r["host"] for r in allowed} == {"127.0.0.1"}
