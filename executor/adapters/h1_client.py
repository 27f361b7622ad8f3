"""The HttpClient port as a lean HTTP/1.1 client: asyncio protocols, llhttp (httptools) parsing,
a keep-alive pool, and the egress policy applied to the address actually connected to.

Why not aiohttp's client (which this replaced; docs/executor.md has the figures): the executor is
CPU-bound at its target rate, and a request through aiohttp's client cost about as much CPU as
everything else the executor does per call together (request objects, header multidicts,
stream readers, several coroutines per request). The executor needs little of HTTP: one
request, no redirects, no cookies, no proxies, no compression, a capped body. That part is
small enough to own, and owning it also lets the request go out as one write of pre-built
bytes the moment its time comes.

What it does, and what it deliberately does not:
- http and https (the system's trust store, hostname checked); HTTP/1.1 only, keep-alive.
- The host is resolved here and every address checked by the egress policy; the connection
  goes to a checked address (TLS still verifies the name), so a second lookup that a
  rebinding DNS server could answer differently never happens. Answers are cached briefly
  (DNS_TTL_S), checked before caching. Lookups run on the resolver's own threads, with a
  timeout each and a share per tenant (resolver.py).
- Redirects are returned, not followed. No Accept-Encoding is sent, so bodies arrive as the
  target wrote them. A body past the limit is cut there and the connection dropped; a head
  with more headers or header bytes than its limits fails the attempt like a malformed one.
- A pooled connection is never used for two requests at once, and one the target closed while
  idle is dropped before reuse. A request that fails on a reused connection is not resent:
  the target may have seen it, and retrying is the orchestrator's decision.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import SplitResult, quote, urlsplit

import httptools

from executor.adapters.resolver import AddrInfo, Resolver
from executor.domain.egress import (
    Allowed,
    Denied,
    Network,
    check_address,
    check_url,
    parse_address,
)
from executor.domain.outcome import AttemptError
from executor.ports import HttpFailure, HttpRequest, HttpResponse, PreparedRequest

DNS_TTL_S = 10.0
IDLE_TIMEOUT_S = 15.0
# How often answers past their request's deadline are looked for: a request times out up to
# this much after its timeout (which is seconds).
DEADLINE_SWEEP_S = 0.05
_DNS_CACHE_SIZE = 1024
# A response's head beyond either bound fails the attempt (as a malformed response would) and
# drops the connection: the body is capped, and without these a target could make the
# executor hold any number of header bytes (200k headers grew it by 59 MB). 100 headers is
# Python's http.client limit; 64 KiB is the order of common servers' and clients' limits.
MAX_RESPONSE_HEADERS = 100
MAX_RESPONSE_HEADER_BYTES = 64 * 1024
_URL_CACHE_SIZE = 4096
USER_AGENT = "ServiceCall-Executor/1"

# Characters a request target may carry as they are; anything else is percent-encoded (UTF-8).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = "/%:@!$&'()*,;=-._~?"
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

Resolved = tuple[str, int, socket.AddressFamily]  # address, port, family
# host, port, tenant → the addresses (Resolver.lookup); raises OSError when there are none.
Lookup = Callable[[str, int, str], Awaitable[Sequence[AddrInfo]]]


class _HeadRefusedError(Exception):
    """Raised from llhttp's header callback to stop parsing a head past its limits."""


class _RefusedError(Exception):
    """Ends an attempt with a given failure from deep inside the request path."""

    def __init__(self, failure: HttpFailure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


def allowed_addresses(infos: Sequence[AddrInfo], allowlist: Sequence[Network]) -> list[Resolved]:
    """The resolved addresses the egress policy allows, in resolver order."""
    allowed: list[Resolved] = []
    for family, _, _, _, address in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text, port = str(address[0]), int(address[1])
        ip = parse_address(text)
        if ip is None or not check_address(ip, allowlist):
            continue
        if family == socket.AF_INET6 and len(address) > 3 and address[3]:
            text = f"{text.split('%', 1)[0]}%{address[3]}"  # keep the zone
        allowed.append((text, port, family))
    return allowed


@dataclass(frozen=True, slots=True)
class _Encoded:
    """What H1Client.prepare leaves in a PreparedRequest."""

    target: _Target
    head: bytes


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str  # as in the URL, lowercased; IDNA-encoded for names
    port: int
    request_target: str
    host_header: str

    @property
    def pool_key(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def _request_target(parts: SplitResult) -> str:
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if not parts.query:
        return path
    # As browsers and aiohttp send a query written with spaces: "+" for a space.
    return f"{path}?{quote(parts.query, safe=_QUERY_SAFE + ' ').replace(' ', '+')}"


def _target(url: str, allowed: Allowed) -> _Target:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        # The API refuses these (credentials belong in a sealed header); never send them, and
        # never drop them silently either.
        raise _RefusedError(HttpFailure(AttemptError.INVALID_REQUEST, "url carries user info"))
    host = allowed.host.lower()
    if ":" in host:
        literal = f"[{host}]"
    else:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as e:
            failure = HttpFailure(AttemptError.INVALID_REQUEST, "invalid host name")
            raise _RefusedError(failure) from e
        literal = host
    default_port = 443 if allowed.scheme == "https" else 80
    host_header = literal if allowed.port == default_port else f"{literal}:{allowed.port}"
    return _Target(allowed.scheme, host, allowed.port, _request_target(parts), host_header)


def _head(request: HttpRequest, target: _Target) -> bytes:
    """The request line and headers, as bytes; refuses what would break the framing."""
    lines = [f"{request.method} {target.request_target} HTTP/1.1", f"Host: {target.host_header}"]
    given = set()
    for name, value in request.headers:
        if not name or not _TOKEN.issuperset(name):
            raise _RefusedError(HttpFailure(AttemptError.INVALID_REQUEST, "invalid header name"))
        if "\r" in value or "\n" in value or "\0" in value:
            raise _RefusedError(HttpFailure(AttemptError.INVALID_REQUEST, "invalid header value"))
        lowered = name.lower()
        if lowered in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # framing is this client's, not the caller's
        given.add(lowered)
        lines.append(f"{name}: {value}")
    if "user-agent" not in given:
        lines.append(f"User-Agent: {USER_AGENT}")
    if request.body or request.method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        lines.append(f"Content-Length: {len(request.body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: one request at a time, parsed by llhttp as bytes arrive."""

    def __init__(
        self,
        max_body: int,
        max_headers: int = MAX_RESPONSE_HEADERS,
        max_header_bytes: int = MAX_RESPONSE_HEADER_BYTES,
    ) -> None:
        self._max_body = max_body
        self._max_headers = max_headers
        self._max_header_bytes = max_header_bytes
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        # True from a request's write until its whole answer was read: a connection given
        # back while busy (its attempt timed out) is dropped, never reused.
        self.busy = False
        self.deadline = 0.0  # loop time by which the answer must be complete
        self._waiter: asyncio.Future[None] | None = None
        self._head_only = False
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        # Bytes received while the final answer's head is not complete (1xx heads count too):
        # llhttp gathers a header's name and value before on_header, so one endless header
        # is only seen here.
        self._head_bytes = 0
        self._head_done = False
        self._header_count = 0
        self._header_bytes = 0  # the headers' own bytes, exactly (a chunk may end the head)
        self._head_refused: str | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._complete = False
        self._truncated = False
        self._error: str | None = None
        self._response: HttpResponse | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport; both have its methods.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Nothing was asked (or the answer is complete): bytes on an idle connection, or
            # after the answer, mean it is unusable; the answer already read stands.
            self.abort()
            return
        if not self._head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._finish(self._head_refused or f"invalid response: {type(e).__name__}")
            return
        if not self._head_done and self._head_bytes > self._max_header_bytes:
            self._finish(f"invalid response: headers over {self._max_header_bytes} bytes")

    def eof_received(self) -> bool | None:
        self._on_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_eof()

    # -- llhttp callbacks

    def on_message_begin(self) -> None:
        if self._waiter is not None and self._waiter.done():
            # A second answer in the same read as the first: the connection is out of step.
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if self._header_count > self._max_headers:
            self._head_refused = f"invalid response: more than {self._max_headers} headers"
            raise _HeadRefusedError  # stops the parser; data_received ends the attempt
        if self._header_bytes > self._max_header_bytes:
            self._head_refused = f"invalid response: headers over {self._max_header_bytes} bytes"
            raise _HeadRefusedError
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if 100 <= self._status < 200:
            return  # informational (100 Continue, 103 Early Hints): the answer follows
        self._head_done = True
        if self._head_only:
            # llhttp cannot be told that a HEAD response has no body; the answer is complete
            # here, and the connection (whose parser now expects a body) is not reused.
            self._complete = True
            self._finish(None, reusable=False)

    def on_body(self, body: bytes) -> None:
        room = self._max_body - self._body_size
        if room <= 0:
            return
        chunk = body[:room]
        self._body.append(chunk)
        self._body_size += len(chunk)
        if len(body) > room:
            # The rest is never read: the connection is dropped rather than drained.
            self._truncated = True
            self._complete = True
            self._finish(None, reusable=False)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:
            self._headers.clear()
            return
        self._complete = True
        self._finish(None, reusable=self._parser.should_keep_alive())

    # -- the request

    def _on_eof(self) -> None:
        if self._waiter is None or self._waiter.done():
            return
        if self._status >= 200 and not self._complete and not self._has_length():
            # A body delimited by the connection's end: it ended.
            self._complete = True
            self._finish(None, reusable=False)
        else:
            self._finish("connection closed before the response was complete")

    def _has_length(self) -> bool:
        return any(n.lower() in ("content-length", "transfer-encoding") for n, _ in self._headers)

    def _finish(self, error: str | None, reusable: bool = False) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self._error = error
        if error is None:
            # Taken now: nothing the connection receives later can change the answer.
            self._response = HttpResponse(self._status, tuple(self._headers), b"".join(self._body))
        if error is not None or not reusable:
            self.abort()
        waiter.set_result(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def expire(self) -> None:
        """The deadline passed with the answer incomplete: the exchange fails with
        TimeoutError and the connection, out of step now, is dropped."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self.abort()
        waiter.set_exception(TimeoutError())

    async def exchange(
        self, head: bytes, body: bytes, head_only: bool, deadline: float
    ) -> HttpResponse:
        """Expired by the client's sweep (H1Client._sweep) if not answered by `deadline`."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self.deadline = deadline
        self._head_only = head_only
        self._status = 0
        self._headers = []
        self._head_bytes = 0
        self._head_done = False
        self._header_count = 0
        self._header_bytes = 0
        self._head_refused = None
        self._body = []
        self._body_size = 0
        self._complete = False
        self._error = None
        self._response = None
        self.busy = True
        assert self.transport is not None
        self.transport.write(head + body if len(body) < 64 * 1024 else head)
        if len(body) >= 64 * 1024:
            self.transport.write(body)
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None or self._response is None:
            raise ConnectionError(self._error or "no response")
        self.busy = False
        response, self._response = self._response, None
        return response


class H1Client:
    """Build it inside the running loop; `close()` drops every pooled connection."""

    def __init__(
        self,
        allowlist: Sequence[Network],
        max_response_bytes: int,
        pool_size: int,
        *,
        max_headers: int = MAX_RESPONSE_HEADERS,
        max_header_bytes: int = MAX_RESPONSE_HEADER_BYTES,
        lookup: Lookup | None = None,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._allowlist = tuple(allowlist)
        self._max_body = max_response_bytes
        self._max_headers = max_headers
        self._max_header_bytes = max_header_bytes
        self._max_idle = pool_size
        # `lookup` (tests) replaces the resolver; without either, one with the defaults.
        self._resolver = resolver if resolver is not None or lookup is not None else Resolver()
        self._lookup: Lookup = lookup or cast(Resolver, self._resolver).lookup
        self._ssl = ssl_context
        self._idle_timeout = idle_timeout_s
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._idle_count = 0
        self._targets: dict[str, _Target | HttpFailure] = {}
        # Connections waiting for an answer, and the one timer that expires overdue ones.
        self._exchanging: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._dns: OrderedDict[tuple[str, int], tuple[float, list[Resolved]]] = OrderedDict()

    @classmethod
    def create(
        cls,
        allowlist: Sequence[Network],
        max_response_bytes: int,
        pool_size: int,
        *,
        max_headers: int = MAX_RESPONSE_HEADERS,
        max_header_bytes: int = MAX_RESPONSE_HEADER_BYTES,
        resolver: Resolver | None = None,
    ) -> H1Client:
        return cls(
            allowlist,
            max_response_bytes,
            pool_size,
            max_headers=max_headers,
            max_header_bytes=max_header_bytes,
            resolver=resolver,
        )

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connections in self._idle.values():
            for connection in connections:
                connection.abort()
        self._idle.clear()
        self._idle_count = 0
        if self._resolver is not None:
            self._resolver.close()

    def _parsed(self, url: str) -> _Target | HttpFailure:
        """The URL's verdict and request target, remembered per URL: calls to one endpoint
        repeat the same URL, and parsing it was ~6% of an attempt's CPU."""
        known = self._targets.get(url)
        if known is not None:
            return known
        verdict = check_url(url)
        parsed: _Target | HttpFailure
        if isinstance(verdict, Denied):
            parsed = HttpFailure(AttemptError.EGRESS_DENIED, verdict.reason)
        else:
            try:
                parsed = _target(url, verdict)
            except _RefusedError as e:
                parsed = e.failure
        if len(self._targets) >= _URL_CACHE_SIZE:
            self._targets.clear()  # simplest bound; refilled by whatever is in use
        self._targets[url] = parsed
        return parsed

    def prepare(self, request: HttpRequest) -> PreparedRequest | HttpFailure:
        """The URL parsed and checked, the request head built. With URLs unique per call (an
        id in the path or query) this work, done at the due instant, was about half of what
        10k calls due together cost the executor (docs/timing.md). Names are resolved and
        addresses checked at send time."""
        target = self._parsed(request.url)
        if isinstance(target, HttpFailure):
            return target
        try:
            head = _head(request, target)
        except _RefusedError as e:
            return e.failure
        return PreparedRequest(request, _Encoded(target, head))

    async def send(self, request: HttpRequest | PreparedRequest) -> HttpResponse | HttpFailure:
        prepared = request if isinstance(request, PreparedRequest) else self.prepare(request)
        if isinstance(prepared, PreparedRequest) and not isinstance(prepared.encoded, _Encoded):
            prepared = self.prepare(prepared.request)  # prepared by another client
        if isinstance(prepared, HttpFailure):
            return prepared
        assert isinstance(prepared.encoded, _Encoded)
        return await self._send(prepared.request, prepared.encoded.target, prepared.encoded.head)

    async def _send(
        self, request: HttpRequest, target: _Target, head: bytes
    ) -> HttpResponse | HttpFailure:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout.total_seconds()
        connection: _Connection | None = None
        try:
            connection = self._pooled(target)
            if connection is None:
                async with asyncio.timeout_at(deadline):
                    connection = await self._connect(target, request.tenant_id)
            # The answer's deadline is kept by one sweep for all requests, not a timer each:
            # asyncio.timeout cost ~13 us per request, a sixth of a send (docs/timing.md).
            self._exchanging.add(connection)
            if self._sweeper is None:
                self._sweeper = loop.call_later(DEADLINE_SWEEP_S, self._sweep)
            return await connection.exchange(
                head, request.body, head_only=request.method == "HEAD", deadline=deadline
            )
        except _RefusedError as e:
            return e.failure
        except TimeoutError:
            return HttpFailure(AttemptError.TIMEOUT, f"no response within {request.timeout}")
        except (ssl.SSLError, ssl.CertificateError) as e:
            return HttpFailure(AttemptError.TLS_ERROR, type(e).__name__)
        except OSError as e:  # ConnectionError included
            return HttpFailure(AttemptError.CONNECTION_ERROR, _os_detail(e))
        finally:
            if connection is not None:
                self._exchanging.discard(connection)
                self._release(connection, target.pool_key)

    def _sweep(self) -> None:
        now = asyncio.get_running_loop().time()
        for connection in [c for c in self._exchanging if c.deadline <= now]:
            connection.expire()
        self._sweeper = (
            asyncio.get_running_loop().call_later(DEADLINE_SWEEP_S, self._sweep)
            if self._exchanging
            else None
        )

    # -- connections

    def _pooled(self, target: _Target) -> _Connection | None:
        idle = self._idle.get(target.pool_key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: least likely closed by the peer
            self._idle_count -= 1
            if not connection.closed and now - connection.idle_since < self._idle_timeout:
                return connection
            connection.abort()
        return None

    def _release(self, connection: _Connection, key: tuple[str, str, int]) -> None:
        if connection.closed or connection.busy:
            connection.abort()  # broken, or abandoned mid-exchange by a timeout
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(key, deque()).append(connection)
        self._idle_count += 1
        if self._idle_count > self._max_idle:
            self._drop_oldest_idle()

    def _drop_oldest_idle(self) -> None:
        key, idle = min(
            ((k, q) for k, q in self._idle.items() if q), key=lambda kq: kq[1][0].idle_since
        )
        idle.popleft().abort()
        self._idle_count -= 1
        if not idle:
            del self._idle[key]

    async def _connect(self, target: _Target, tenant_id: str) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if target.scheme == "https":
            context = self._ssl or ssl.create_default_context()
        last_error: OSError | None = None
        for address, port, _family in await self._addresses(target, tenant_id):
            try:
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self._max_body, self._max_headers, self._max_header_bytes),
                    address,
                    port,
                    ssl=context,
                    server_hostname=target.host if context is not None else None,
                )
                return protocol
            except (ssl.SSLError, ssl.CertificateError):
                raise
            except OSError as e:
                last_error = e
        assert last_error is not None
        raise last_error

    async def _addresses(self, target: _Target, tenant_id: str) -> list[Resolved]:
        literal = parse_address(target.host)
        if literal is not None:
            if not check_address(literal, self._allowlist):
                raise _RefusedError(
                    HttpFailure(AttemptError.EGRESS_DENIED, "address refused by egress policy")
                )
            family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
            return [(target.host, target.port, family)]
        key = (target.host, target.port)
        now = time.monotonic()
        cached = self._dns.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await self._lookup(target.host, target.port, tenant_id)
        except TimeoutError as e:
            failure = HttpFailure(AttemptError.CONNECTION_ERROR, "dns lookup timed out")
            raise _RefusedError(failure) from e
        except OSError as e:
            failure = HttpFailure(AttemptError.CONNECTION_ERROR, "dns lookup failed")
            raise _RefusedError(failure) from e
        allowed = allowed_addresses(infos, self._allowlist)
        if not allowed:
            raise _RefusedError(
                HttpFailure(AttemptError.EGRESS_DENIED, "address refused by egress policy")
            )
        self._dns[key] = (now + DNS_TTL_S, allowed)
        self._dns.move_to_end(key)
        if len(self._dns) > _DNS_CACHE_SIZE:
            self._dns.popitem(last=False)
        return allowed


def _os_detail(e: OSError) -> str:
    """Safe to log: the kind of failure, never the request."""
    if isinstance(e, ConnectionError) and e.args and isinstance(e.args[0], str):
        return e.args[0] if e.args[0].startswith(("connection", "invalid")) else type(e).__name__
    return type(e).__name__
