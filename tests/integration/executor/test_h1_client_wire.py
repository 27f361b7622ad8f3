"""The lean HTTP/1.1 client on the wire: framing, keep-alive and TLS, against loopback servers
that answer with exactly the bytes each test gives them."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from executor.adapters.h1_client import H1Client
from executor.domain.egress import parse_allowlist
from executor.domain.outcome import AttemptError
from executor.ports import HttpFailure, HttpRequest, HttpResponse

pytestmark = pytest.mark.integration

LOOPBACK = parse_allowlist(["127.0.0.0/8", "::1/128"])


@dataclass
class RawServer:
    """Answers every request with `answer(request_bytes)`; records requests and connections."""

    answer: Callable[[bytes], bytes]
    close_after_answer: bool = False
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    def protocol(self) -> asyncio.Protocol:
        server = self
        server.connections += 1

        class Answer(asyncio.Protocol):
            buffer = b""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                head, sep, rest = self.buffer.partition(b"\r\n\r\n")
                if not sep:
                    return
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                if len(rest) < length:
                    return
                request, self.buffer = head + sep + rest[:length], rest[length:]
                server.requests.append(request)
                self.transport.write(server.answer(request))
                if server.close_after_answer:
                    self.transport.close()

        return Answer()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., RawServer]]:
    servers: list[asyncio.Server] = []
    loop = asyncio.get_running_loop()

    async def start(server: RawServer, ssl_context: ssl.SSLContext | None = None) -> RawServer:
        listening = await loop.create_server(server.protocol, "127.0.0.1", 0, ssl=ssl_context)
        servers.append(listening)
        server.port = listening.sockets[0].getsockname()[1]
        return server

    def make(answer: Callable[[bytes], bytes], **kwargs: object) -> RawServer:
        return RawServer(answer, **kwargs)  # type: ignore[arg-type]

    make.start = start  # type: ignore[attr-defined]
    yield make
    for listening in servers:
        listening.close()


async def started(raw: Callable[..., RawServer], answer: bytes, **kwargs: object) -> RawServer:
    server = raw(lambda _request: answer, **kwargs)
    result: RawServer = await raw.start(server)  # type: ignore[attr-defined]
    return result


def get(url: str, method: str = "GET", body: bytes = b"", timeout_s: float = 5.0) -> HttpRequest:
    return HttpRequest(method, url, (), body, timedelta(seconds=timeout_s))


@pytest.fixture
async def client() -> AsyncIterator[H1Client]:
    client = H1Client(LOOPBACK, 1000, pool_size=4)
    yield client
    await client.close()


async def test_keep_alive_reuses_one_connection(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    for _ in range(5):
        result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
        assert isinstance(result, HttpResponse) and result.body == b"ok"
    assert (len(server.requests), server.connections) == (5, 1)


async def test_a_connection_the_target_closed_is_not_reused(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(
        raw, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close_after_answer=True
    )
    for _ in range(3):
        result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
        assert isinstance(result, HttpResponse) and result.body == b"ok"
        await asyncio.sleep(0.01)  # let the close arrive, as it would between calls
    assert server.connections == 3


async def test_connection_close_in_the_answer_is_honoured(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(
        raw, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    )
    for _ in range(2):
        result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
        assert isinstance(result, HttpResponse)
    assert server.connections == 2


async def test_a_chunked_body_is_joined(raw: Callable[..., RawServer], client: H1Client) -> None:
    server = await started(
        raw,
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
    assert isinstance(result, HttpResponse)
    assert (result.status, result.body) == (201, b"abcde")


async def test_a_body_delimited_by_close_ends_with_it(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after_answer=True)
    result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
    assert isinstance(result, HttpResponse)
    assert result.body == b"until the end"


async def test_informational_answers_are_skipped(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(
        raw, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-Final: yes\r\n\r\n"
    )
    result = await client.send(get(f"http://127.0.0.1:{server.port}/", method="POST", body=b"x"))
    assert isinstance(result, HttpResponse)
    assert (result.status, result.header("X-Final")) == (204, "yes")


async def test_a_head_answer_has_no_body_whatever_its_length_says(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    result = await client.send(get(f"http://127.0.0.1:{server.port}/", method="HEAD"))
    assert isinstance(result, HttpResponse)
    assert (result.status, result.body) == (200, b"")


async def test_bytes_after_a_complete_answer_keep_it_and_drop_the_connection(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(
        raw, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 500 Oops\r\n\r\n"
    )
    for _ in range(2):
        result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
        assert isinstance(result, HttpResponse)
        assert (result.status, result.body) == (200, b"ok")
        await asyncio.sleep(0.01)  # let the stray bytes arrive while the connection is idle
    assert server.connections == 2  # the first connection was not reused


async def test_garbage_is_a_connection_error(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, b"SSH-2.0-OpenSSH\r\n\r\n")
    result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
    assert isinstance(result, HttpFailure)
    assert result.error is AttemptError.CONNECTION_ERROR


async def test_a_close_before_the_answer_is_a_connection_error(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, b"", close_after_answer=True)
    result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
    assert isinstance(result, HttpFailure)
    assert result.error is AttemptError.CONNECTION_ERROR


async def test_framing_headers_are_the_clients(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    request = HttpRequest(
        "POST",
        f"http://127.0.0.1:{server.port}/x",
        (("Content-Length", "999"), ("Host", "evil.example"), ("X-Ok", "1")),
        b"body",
        timedelta(seconds=5),
    )
    assert isinstance(await client.send(request), HttpResponse)
    head = server.requests[0].split(b"\r\n\r\n")[0].lower()
    assert b"content-length: 4" in head
    assert b"content-length: 999" not in head
    assert f"host: 127.0.0.1:{server.port}".encode() in head
    assert b"evil.example" not in head
    assert server.requests[0].endswith(b"body")


@pytest.mark.parametrize("header", [("X-Bad", "a\r\nX-Injected: 1"), ("Bad Name", "v")])
async def test_headers_that_would_break_framing_are_refused(
    raw: Callable[..., RawServer], client: H1Client, header: tuple[str, str]
) -> None:
    server = await started(raw, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    request = HttpRequest(
        "GET", f"http://127.0.0.1:{server.port}/", (header,), b"", timedelta(seconds=5)
    )
    result = await client.send(request)
    assert isinstance(result, HttpFailure)
    assert result.error is AttemptError.INVALID_REQUEST
    assert server.connections == 0


async def test_a_url_with_user_info_is_refused_unsent(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    result = await client.send(get(f"http://user:secret@127.0.0.1:{server.port}/"))
    assert isinstance(result, HttpFailure)
    assert result.error is AttemptError.INVALID_REQUEST
    assert "secret" not in result.detail
    assert server.connections == 0


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_verifies_the_name_on_a_pinned_address(
    raw: Callable[..., RawServer], tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = raw(lambda _r: b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntls")
    await raw.start(server, server_context)  # type: ignore[attr-defined]

    trusting = ssl.create_default_context(cafile=str(cert))
    client = H1Client(LOOPBACK, 1000, pool_size=2, ssl_context=trusting)
    try:
        ok = await client.send(get(f"https://localhost:{server.port}/"))
        assert isinstance(ok, HttpResponse) and ok.body == b"tls"
        # The certificate names localhost, not the address: asking for the address fails.
        wrong_name = await client.send(get(f"https://127.0.0.1:{server.port}/"))
        assert isinstance(wrong_name, HttpFailure)
        assert wrong_name.error is AttemptError.TLS_ERROR
    finally:
        await client.close()

    default_trust = H1Client(LOOPBACK, 1000, pool_size=2)
    try:
        untrusted = await default_trust.send(get(f"https://localhost:{server.port}/"))
        assert isinstance(untrusted, HttpFailure)
        assert untrusted.error is AttemptError.TLS_ERROR
    finally:
        await default_trust.close()


# A response head is bounded like the body (issue 12, defect 6): a target answering with
# endless headers fails the attempt as a malformed response would, and the connection goes.


def head_with(headers: int, value: bytes = b"v") -> bytes:
    lines = b"".join(b"X-H%d: %s\r\n" % (n, value) for n in range(headers))
    return b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok"


async def test_a_response_with_too_many_headers_fails_and_drops_the_connection(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, head_with(200_000))
    url = f"http://127.0.0.1:{server.port}/"
    result = await client.send(get(url))
    assert isinstance(result, HttpFailure)
    # Retryable, like any malformed response: another attempt may meet a sane target.
    assert result.error is AttemptError.CONNECTION_ERROR
    assert result.detail == "invalid response: more than 100 headers"
    await client.send(get(url))
    assert server.connections == 2  # the first connection was not reused


async def test_response_headers_over_their_bytes_fail(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, head_with(50, b"v" * 2000))  # 50 headers, ~100 KB
    result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
    assert isinstance(result, HttpFailure)
    assert result.error is AttemptError.CONNECTION_ERROR
    assert result.detail == "invalid response: headers over 65536 bytes"


async def test_one_endless_header_fails_before_it_ends(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    # llhttp gathers a header before reporting it; this one never ends, so only the bytes
    # received for the head can tell.
    server = await started(raw, b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 4_000_000)
    result = await client.send(get(f"http://127.0.0.1:{server.port}/", timeout_s=3))
    assert isinstance(result, HttpFailure)
    assert result.detail == "invalid response: headers over 65536 bytes"


async def test_endless_informational_heads_count_towards_the_limit(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    server = await started(raw, early_hints * 5_000)
    result = await client.send(get(f"http://127.0.0.1:{server.port}/", timeout_s=3))
    assert isinstance(result, HttpFailure)
    assert result.error is AttemptError.CONNECTION_ERROR


async def test_headers_within_the_limits_are_kept(
    raw: Callable[..., RawServer], client: H1Client
) -> None:
    server = await started(raw, head_with(99))  # and Content-Length: 100
    result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
    assert isinstance(result, HttpResponse) and result.body == b"ok"
    assert len(result.headers) == 100


async def test_the_header_limits_are_the_clients_settings(
    raw: Callable[..., RawServer],
) -> None:
    server = await started(raw, head_with(20))
    client = H1Client(LOOPBACK, 1000, pool_size=2, max_headers=10, max_header_bytes=1 << 20)
    try:
        result = await client.send(get(f"http://127.0.0.1:{server.port}/"))
    finally:
        await client.close()
    assert isinstance(result, HttpFailure)
    assert result.detail == "invalid response: more than 10 headers"
