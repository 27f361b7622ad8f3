"""The HttpClient port over aiohttp, with the egress policy enforced at connect time."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict
from yarl import URL

from executor.domain.egress import Denied, Network, check_address, check_url, parse_address
from executor.domain.outcome import AttemptError
from executor.ports import HttpFailure, HttpRequest, HttpResponse

_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


AddrInfo = tuple[
    socket.AddressFamily,
    socket.SocketKind,
    int,
    str,
    tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
]
Lookup = Callable[[str, int, socket.AddressFamily], Awaitable[Sequence[AddrInfo]]]


async def _getaddrinfo(host: str, port: int, family: socket.AddressFamily) -> Sequence[AddrInfo]:
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, family=family, flags=socket.AI_ADDRCONFIG
    )


class EgressDeniedError(OSError):
    """Every address a host resolved to is refused by the egress policy."""

    def __init__(self, host: str, refused: int) -> None:
        super().__init__(f"{host}: all {refused} resolved addresses refused by egress policy")


class EgressResolver(AbstractResolver):
    """Resolves like aiohttp's ThreadedResolver, then keeps only addresses the policy allows.

    The connector connects to exactly what this returns, so the address checked is the
    address used: no second lookup a rebinding DNS server could answer differently.
    """

    def __init__(self, allowlist: Sequence[Network], lookup: Lookup | None = None) -> None:
        self._allowlist = tuple(allowlist)
        self._lookup = lookup or _getaddrinfo

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self._lookup(host, port, family)
        allowed: list[ResolveResult] = []
        for info_family, _, proto, _, address in infos:
            if info_family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip_text, resolved_port = str(address[0]), int(address[1])
            ip = parse_address(ip_text)
            if ip is None or not check_address(ip, self._allowlist):
                continue
            if info_family == socket.AF_INET6 and len(address) > 3 and address[3]:
                ip_text = f"{ip_text.split('%', 1)[0]}%{address[3]}"  # keep the zone
            allowed.append(
                ResolveResult(
                    hostname=host,
                    host=ip_text,
                    port=resolved_port,
                    family=info_family,
                    proto=proto,
                    flags=_NUMERIC,
                )
            )
        if not allowed:
            raise EgressDeniedError(host, len(infos))
        return allowed

    async def close(self) -> None:
        pass


def _literal_allowed(host: str, allowlist: Sequence[Network]) -> bool | None:
    """aiohttp skips the resolver for hosts that look like IP literals (a colon, or only digits
    and dots), so those are judged here; None when the host is a name for the resolver."""
    if ":" not in host and not host.replace(".", "").isdigit():
        return None
    ip = parse_address(host)
    return ip is not None and check_address(ip, allowlist)


_URL_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/?#[]@!$&'()*+,;=%"
)


def _in_wire_form(url: str) -> bool:
    return all(c in _URL_CHARS for c in url)


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = await response.content.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    if not response.content.at_eof():
        # The rest is never read: drop the connection rather than drain it into the pool.
        response.close()
    return b"".join(chunks)


class AiohttpClient:
    """One shared session with a pooled connector; build it inside the running loop.

    aiohttp rather than httpx, by measurement (docs/executor.md): on this machine class, POSTs
    to a loopback keep-alive sink cost aiohttp 3.14 about 0.1-0.2 ms of CPU each and httpx
    0.28 about 2-4 ms (its pool re-scans every connection on each request), at 16 and 128
    concurrent requests. The executor is CPU-bound at its target rate, so that decides it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        allowlist: Sequence[Network],
        max_response_bytes: int,
    ) -> None:
        self._session = session
        self._allowlist = tuple(allowlist)
        self._max_response_bytes = max_response_bytes

    @classmethod
    def create(
        cls, allowlist: Sequence[Network], max_response_bytes: int, pool_size: int
    ) -> AiohttpClient:
        connector = aiohttp.TCPConnector(
            # As many connections as attempts in flight: an attempt must not spend its
            # timeout queued for a pool slot.
            limit=pool_size,
            limit_per_host=0,
            resolver=EgressResolver(allowlist),
        )
        session = aiohttp.ClientSession(
            connector=connector,
            # Tenants must not see each other's cookies.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return cls(session, allowlist, max_response_bytes)

    async def close(self) -> None:
        await self._session.close()

    async def send(self, request: HttpRequest) -> HttpResponse | HttpFailure:
        verdict = check_url(request.url)
        if isinstance(verdict, Denied):
            return HttpFailure(AttemptError.EGRESS_DENIED, verdict.reason)
        try:
            # A URL already in wire form goes out byte for byte (yarl would otherwise decode
            # e.g. %2F in the query); anything else is percent-encoded by yarl.
            url = URL(request.url, encoded=_in_wire_form(request.url))
        except (ValueError, TypeError):
            return HttpFailure(AttemptError.INVALID_REQUEST, "malformed url")
        host = url.raw_host
        if not host:
            return HttpFailure(AttemptError.INVALID_REQUEST, "url has no host")
        if _literal_allowed(host, self._allowlist) is False:
            return HttpFailure(AttemptError.EGRESS_DENIED, "address refused by egress policy")
        headers = CIMultiDict(request.headers)
        # Send the body as given: no invented Content-Type.
        skip = () if "Content-Type" in headers else ("Content-Type",)
        try:
            async with (
                asyncio.timeout(request.timeout.total_seconds()),
                self._session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=request.body or None,
                    allow_redirects=False,
                    skip_auto_headers=skip,
                ) as response,
            ):
                body = await _read_capped(response, self._max_response_bytes)
                return HttpResponse(response.status, tuple(response.headers.items()), body)
        except TimeoutError:
            return HttpFailure(AttemptError.TIMEOUT, f"no response within {request.timeout}")
        except aiohttp.ClientConnectorDNSError as e:
            if isinstance(e.os_error, EgressDeniedError):
                return HttpFailure(AttemptError.EGRESS_DENIED, "address refused by egress policy")
            return HttpFailure(AttemptError.CONNECTION_ERROR, "dns lookup failed")
        except aiohttp.ClientSSLError as e:
            return HttpFailure(AttemptError.TLS_ERROR, type(e).__name__)
        except aiohttp.InvalidURL:
            return HttpFailure(AttemptError.INVALID_REQUEST, "malformed url")
        except aiohttp.ClientError as e:
            return HttpFailure(AttemptError.CONNECTION_ERROR, type(e).__name__)
        except ValueError as e:
            # aiohttp refuses e.g. header values with line breaks before sending anything.
            return HttpFailure(AttemptError.INVALID_REQUEST, type(e).__name__)
