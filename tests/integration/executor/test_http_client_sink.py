"""The real HTTP adapter against a loopback sink: what arrives, and what never leaves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from executor.adapters.h1_client import H1Client
from executor.domain.egress import parse_allowlist
from executor.domain.execution import CallRef, ExecutionOrder
from executor.domain.outcome import AttemptError
from executor.ports import HttpFailure, HttpRequest, HttpResponse
from tests.fakes.executor.loopback import LoopbackServer, serve_target
from tests.fakes.executor.ports import T0, Target

pytestmark = pytest.mark.integration

LOOPBACK = parse_allowlist(["127.0.0.0/8", "::1/128"])
LIMIT = 64 * 1024


@dataclass
class Sink:
    target: Target
    server: LoopbackServer

    @property
    def url(self) -> str:
        return self.server.base_url


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    target = Target()
    server = await serve_target(target)
    yield Sink(target, server)
    target.release.set()
    await server.close()


Client = H1Client


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    client = H1Client.create(LOOPBACK, LIMIT, pool_size=16)
    yield client
    await client.close()


@pytest.fixture
async def closed_client() -> AsyncIterator[Client]:
    client = H1Client.create((), LIMIT, pool_size=16)
    yield client
    await client.close()


def request(
    url: str,
    method: str = "POST",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    timeout: timedelta = timedelta(seconds=5),
) -> HttpRequest:
    return HttpRequest(method, url, headers, body, timeout)


async def test_method_path_headers_and_body_arrive_exactly(sink: Sink, client: Client) -> None:
    order = ExecutionOrder(
        call=CallRef("acme", "call-9", "corr-9", 3),
        attempt=4,
        not_before=T0,
        lease_expires_at=None,
        request=request(
            f"{sink.url}/echo/a%20b/c?x=1&y=%2F&z",
            method="PATCH",
            headers=(
                ("X-Custom", "v1; q=0.5"),
                ("Authorization", "Bearer secret-token"),
                ("X-Empty", ""),
            ),
            body=bytes(range(256)) * 4,
        ),
        idempotency_key="idem-9",
        snippet_bytes=100,
    )
    result = await client.send(order.outgoing_request())
    assert isinstance(result, HttpResponse)
    assert result.status == 200
    [seen] = sink.target.seen
    assert seen.method == "PATCH"
    assert seen.path == "/echo/a%20b/c?x=1&y=%2F&z"
    assert seen.body == bytes(range(256)) * 4
    assert seen.header("X-Custom") == "v1; q=0.5"
    assert seen.header("Authorization") == "Bearer secret-token"
    assert seen.header("X-Empty") == ""
    assert seen.header("Idempotency-Key") == "idem-9"
    assert seen.header("X-ServiceCall-Id") == "call-9"
    assert seen.header("X-ServiceCall-Attempt") == "4"
    assert seen.header("Content-Length") == "1024"
    # nothing invented for the body
    assert seen.header("Content-Type") is None
    assert result.body == bytes(range(256)) * 4


async def test_a_url_not_in_wire_form_is_percent_encoded(sink: Sink, client: Client) -> None:
    await client.send(request(f"{sink.url}/echo/a b/ü?q=x y"))
    assert sink.target.seen[0].path == "/echo/a%20b/%C3%BC?q=x+y"


async def test_a_given_content_type_is_kept(sink: Sink, client: Client) -> None:
    await client.send(
        request(f"{sink.url}/echo", headers=(("Content-Type", "text/csv"),), body=b"a,b\n")
    )
    assert sink.target.seen[0].header("Content-Type") == "text/csv"


async def test_no_response_within_the_attempt_timeout(sink: Sink, client: Client) -> None:
    result = await client.send(request(f"{sink.url}/hang", timeout=timedelta(milliseconds=100)))
    assert isinstance(result, HttpFailure)
    assert result.error is AttemptError.TIMEOUT
    assert [s.path for s in sink.target.seen] == ["/hang"]


async def test_an_oversized_body_is_cut_at_the_limit(sink: Sink, client: Client) -> None:
    result = await client.send(request(f"{sink.url}/big/{8 * 1024 * 1024}"))
    assert isinstance(result, HttpResponse)
    assert result.status == 200
    assert result.body == b"x" * LIMIT
    # the connection that was cut is not reused: the next request still works
    again = await client.send(request(f"{sink.url}/echo", body=b"next"))
    assert isinstance(again, HttpResponse)
    assert again.body == b"next"


async def test_a_redirect_is_not_followed(sink: Sink, client: Client) -> None:
    result = await client.send(request(f"{sink.url}/redirect"))
    assert isinstance(result, HttpResponse)
    assert result.status == 302
    assert result.header("Location") == "/echo"
    assert [s.path for s in sink.target.seen] == ["/redirect"]


async def test_retry_after_reaches_the_caller(sink: Sink, client: Client) -> None:
    result = await client.send(request(f"{sink.url}/status/429?retry_after=12"))
    assert isinstance(result, HttpResponse)
    assert (result.status, result.header("Retry-After")) == (429, "12")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
    ],
)
async def test_loopback_is_refused_when_the_allowlist_is_empty(
    sink: Sink, closed_client: Client, host: str
) -> None:
    url = f"http://{host}:{sink.server.port}/echo"
    result = await closed_client.send(request(url, body=b"must not arrive"))
    assert isinstance(result, HttpFailure)
    assert result.error is AttemptError.EGRESS_DENIED
    assert sink.server.connections == 0
    assert sink.target.seen == []


async def test_the_allowlist_opens_loopback_by_name(sink: Sink, client: Client) -> None:
    result = await client.send(request(f"http://localhost:{sink.server.port}/echo", body=b"hi"))
    assert isinstance(result, HttpResponse)
    assert result.body == b"hi"
    assert sink.server.connections == 1
