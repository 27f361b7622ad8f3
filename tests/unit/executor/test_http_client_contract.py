"""The HttpClient contract: the in-memory fake and the real adapters all pass it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from executor.adapters.h1_client import H1Client
from executor.domain.egress import Network, parse_allowlist
from executor.domain.outcome import AttemptError
from executor.ports import HttpClient, HttpFailure, HttpRequest, HttpResponse, PreparedRequest
from tests.fakes.executor.loopback import closed_port, serve_target
from tests.fakes.executor.ports import FakeHttpClient, Target

LOOPBACK = parse_allowlist(["127.0.0.0/8", "::1/128"])
LIMIT = 1000


@dataclass
class Harness:
    target: Target
    base_url: str
    closed_url: str
    make: Callable[[tuple[Network, ...]], HttpClient]
    clients: list[H1Client]

    def client(self, allowlist: tuple[Network, ...] = LOOPBACK) -> HttpClient:
        return self.make(allowlist)


@pytest.fixture(params=["fake", "h1"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    target = Target()
    if request.param == "fake":
        port = 18080
        yield Harness(
            target,
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{port + 1}",
            lambda allow: FakeHttpClient(target, port, allow, LIMIT),
            [],
        )
        return
    server = await serve_target(target)
    clients: list[H1Client] = []

    def make(allow: tuple[Network, ...]) -> HttpClient:
        client = H1Client.create(allow, LIMIT, pool_size=8)
        clients.append(client)
        return client

    yield Harness(target, server.base_url, f"http://127.0.0.1:{closed_port()}", make, clients)
    target.release.set()
    for client in clients:
        await client.close()
    await server.close()


def req(url: str, method: str = "POST", body: bytes = b"", timeout_s: float = 5.0) -> HttpRequest:
    return HttpRequest(
        method=method,
        url=url,
        headers=(("X-Trace", "abc"), ("Content-Type", "application/json")),
        body=body,
        timeout=timedelta(seconds=timeout_s),
    )


def response(result: HttpResponse | HttpFailure) -> HttpResponse:
    assert isinstance(result, HttpResponse), result
    return result


def failure(result: HttpResponse | HttpFailure | PreparedRequest) -> HttpFailure:
    assert isinstance(result, HttpFailure), result
    return result


async def test_sends_method_path_headers_and_body(harness: Harness) -> None:
    result = response(
        await harness.client().send(req(f"{harness.base_url}/echo/x?q=1", body=b'{"a":1}'))
    )
    assert result.status == 200
    assert result.body == b'{"a":1}'
    [seen] = harness.target.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/echo/x?q=1", b'{"a":1}')
    assert seen.header("X-Trace") == "abc"
    assert seen.header("Content-Type") == "application/json"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
async def test_every_method_arrives(harness: Harness, method: str) -> None:
    result = response(await harness.client().send(req(f"{harness.base_url}/echo", method)))
    assert result.status == 200
    assert harness.target.seen[0].method == method


async def test_response_headers_come_back(harness: Harness) -> None:
    result = response(
        await harness.client().send(req(f"{harness.base_url}/status/503?retry_after=7"))
    )
    assert result.status == 503
    assert result.header("retry-after") == "7"


async def test_body_is_cut_at_the_limit(harness: Harness) -> None:
    result = response(await harness.client().send(req(f"{harness.base_url}/big/{LIMIT * 50}")))
    assert result.body == b"x" * LIMIT


async def test_redirect_is_returned_not_followed(harness: Harness) -> None:
    result = response(await harness.client().send(req(f"{harness.base_url}/redirect")))
    assert result.status == 302
    assert [s.path for s in harness.target.seen] == ["/redirect"]


async def test_no_response_in_time_is_a_timeout(harness: Harness) -> None:
    result = failure(await harness.client().send(req(f"{harness.base_url}/hang", timeout_s=0.05)))
    assert result.error is AttemptError.TIMEOUT


async def test_nothing_listening_is_a_connection_error(harness: Harness) -> None:
    result = failure(await harness.client().send(req(f"{harness.closed_url}/echo")))
    assert result.error is AttemptError.CONNECTION_ERROR


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_refused_without_an_allowlist(harness: Harness, host: str) -> None:
    url = harness.base_url.replace("127.0.0.1", host)
    result = failure(await harness.client(allowlist=()).send(req(f"{url}/echo")))
    assert result.error is AttemptError.EGRESS_DENIED
    assert harness.target.seen == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "http:///nohost"])
async def test_other_schemes_and_hostless_urls_are_refused(harness: Harness, url: str) -> None:
    result = failure(await harness.client().send(req(url)))
    assert result.error is AttemptError.EGRESS_DENIED
    assert harness.target.seen == []


async def test_a_prepared_request_is_sent_as_it_was_given(harness: Harness) -> None:
    client = harness.client()
    prepared = client.prepare(req(f"{harness.base_url}/echo/p", body=b"ahead"))
    assert isinstance(prepared, PreparedRequest)
    assert harness.target.seen == []  # preparing sends nothing
    result = response(await client.send(prepared))
    assert result.body == b"ahead"
    [seen] = harness.target.seen
    assert (seen.path, seen.header("X-Trace")) == ("/echo/p", "abc")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///nohost"])
async def test_a_url_refused_when_prepared_is_the_failure_send_would_give(
    harness: Harness, url: str
) -> None:
    client = harness.client()
    refused = failure(client.prepare(req(url)))
    assert refused == failure(await client.send(req(url)))
    assert refused.error is AttemptError.EGRESS_DENIED
    assert harness.target.seen == []
