"""In-memory fakes of the executor's ports (unit scope only) and a scripted target."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from google.protobuf.message import DecodeError

from executor.domain.egress import Denied, Network, check_address, check_url, parse_address
from executor.domain.outcome import AttemptError
from executor.ports import HttpFailure, HttpRequest, HttpResponse, PreparedRequest
from mesh.ports import OutgoingMessage
from servicecall.internal.v1 import events_pb2 as pb
from tests.fakes.clock import T0, FakeClock, SeqIds

__all__ = ["T0", "FakeClock", "SeqIds"]


class FakeSleeper:
    """Sleeping moves the fake clock; `early` makes each wake-up come that much too soon (as
    uvloop's rounded timers do), and `gate`, when set, holds every sleeper until it opens."""

    def __init__(self, clock: FakeClock, early: timedelta = timedelta(0)) -> None:
        self.clock = clock
        self.early = early
        self.calls: list[float] = []
        self.gate: asyncio.Event | None = None
        self.sleeping = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.sleeping.set()
        if self.gate is not None:
            await self.gate.wait()
        requested = timedelta(seconds=seconds)
        self.clock.advance(requested - self.early if requested > self.early else requested)


@dataclass
class FakeBus:
    """An EventQueue that records hand-overs (`produce:`) and acknowledgements (`ack:`) in
    `journal`, which it shares with the fake HTTP client so tests can check the order of
    producing, sending and acking. Acks come in hand-over order, as Kafka's do per partition."""

    journal: list[str] = field(default_factory=list)
    published: list[OutgoingMessage] = field(default_factory=list)  # acknowledged, in order
    failures: int = 0  # the next N hand-overs fail (their future raises)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)  # payload name → ack gate
    attempts: int = 0
    publishing: asyncio.Event = field(default_factory=asyncio.Event)  # set on the first call
    _last: asyncio.Future[None] | None = None

    def enqueue(self, messages: Sequence[OutgoingMessage]) -> asyncio.Future[None]:
        self.attempts += 1
        self.publishing.set()
        for message in messages:
            self.journal.append(f"produce:{_payload(message)}")
        if self.failures > 0:
            self.failures -= 1
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("broker unavailable"))
            return failed
        acked = asyncio.ensure_future(self._ack(list(messages), self._last))
        self._last = acked
        return acked

    async def _ack(
        self, messages: list[OutgoingMessage], previous: asyncio.Future[None] | None
    ) -> None:
        if previous is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(previous)
        for message in messages:
            gate = self.gates.get(_payload(message))
            if gate is not None:
                await gate.wait()
            self.published.append(message)
            self.journal.append(f"ack:{_payload(message)}")

    def envelopes(self) -> list[pb.Envelope]:
        return [pb.Envelope.FromString(m.value) for m in self.published]


def _payload(message: OutgoingMessage) -> str:
    try:
        return pb.Envelope.FromString(message.value).WhichOneof("payload") or ""
    except DecodeError:
        return "raw"


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str  # with the query string
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class Target:
    """The routes every HttpClient is tested against, served by a loopback aiohttp server for
    the real adapter and called directly by the fake:

    /echo → 200 with the request body · /status/{n}[?retry_after=v] → n ·
    /big/{n} → n bytes · /redirect → 302 to /echo · /hang → waits until `release` is set.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.release = asyncio.Event()

    async def handle(self, seen: Seen) -> Reply:
        self.seen.append(seen)
        parts = urlsplit(seen.path)
        segments = [s for s in parts.path.split("/") if s]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        match segments:
            case ["echo", *_]:
                return Reply(200, (("X-Echo-Method", seen.method),), seen.body)
            case ["status", code]:
                headers = (("Retry-After", query["retry_after"]),) if "retry_after" in query else ()
                return Reply(int(code), headers, f"status {code}".encode())
            case ["big", size]:
                return Reply(200, (), b"x" * int(size))
            case ["redirect"]:
                return Reply(302, (("Location", "/echo"),), b"")
            case ["hang"]:
                await self.release.wait()
                return Reply(200)
            case _:
                return Reply(404, (), b"no such route")


class FakeHttpClient:
    """Follows the HttpClient contract in memory: egress policy over a fake DNS table, no
    redirects, bodies cut at the limit. `/hang` is reported as a timeout at once, with no
    real waiting; requests to ports other than `port` find nothing listening."""

    def __init__(
        self,
        target: Target,
        port: int,
        allowlist: Sequence[Network] = (),
        max_response_bytes: int = 1024 * 1024,
        dns: Mapping[str, tuple[str, ...]] | None = None,
        journal: list[str] | None = None,
    ) -> None:
        self.target = target
        self.port = port
        self.allowlist = tuple(allowlist)
        self.max_response_bytes = max_response_bytes
        self.dns = dict(dns or {"localhost": ("127.0.0.1", "::1")})
        self.journal = journal if journal is not None else []
        self.requests: list[HttpRequest] = []
        self.prepared: list[HttpRequest] = []
        # Returned (or raised) first, target untouched.
        self.scripted: list[HttpResponse | HttpFailure | Exception] = []
        self.on_send: Callable[[HttpRequest], None] | None = None
        # When set, every request is held in flight until it is set (a slow target).
        self.gate: asyncio.Event | None = None

    def prepare(self, request: HttpRequest) -> PreparedRequest | HttpFailure:
        """Checks what the real client checks without I/O: the URL's verdict."""
        self.prepared.append(request)
        verdict = check_url(request.url)
        if isinstance(verdict, Denied):
            return HttpFailure(AttemptError.EGRESS_DENIED, verdict.reason)
        return PreparedRequest(request)

    async def send(self, request: HttpRequest | PreparedRequest) -> HttpResponse | HttpFailure:
        if isinstance(request, PreparedRequest):
            request = request.request
        self.requests.append(request)
        self.journal.append("http:send")
        if self.on_send is not None:
            self.on_send(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.scripted:
            scripted = self.scripted.pop(0)
            if isinstance(scripted, Exception):
                raise scripted
            return scripted
        verdict = check_url(request.url)
        if isinstance(verdict, Denied):
            return HttpFailure(AttemptError.EGRESS_DENIED, verdict.reason)
        literal = parse_address(verdict.host)
        addresses = (
            [literal] if literal else [parse_address(a) for a in self.dns.get(verdict.host, ())]
        )
        if not addresses:
            return HttpFailure(AttemptError.CONNECTION_ERROR, "dns lookup failed")
        if not any(a is not None and check_address(a, self.allowlist) for a in addresses):
            return HttpFailure(AttemptError.EGRESS_DENIED, "address refused by egress policy")
        if verdict.port != self.port:
            return HttpFailure(AttemptError.CONNECTION_ERROR, "connection refused")
        parts = urlsplit(request.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if path.startswith("/hang"):
            self.target.seen.append(Seen(request.method, path, request.headers, request.body))
            return HttpFailure(AttemptError.TIMEOUT, "no response in time")
        reply = await self.target.handle(Seen(request.method, path, request.headers, request.body))
        body = b"" if request.method == "HEAD" else reply.body[: self.max_response_bytes]
        return HttpResponse(reply.status, reply.headers, body)
