"""The handler's whole flow with a fake bus, a fake HTTP client and fake time."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from executor.domain.outcome import AttemptError
from executor.domain.signing import SigningSecret
from executor.ports import HttpFailure, HttpRequest
from executor.service_layer.attempts import PREPARE_AHEAD
from mesh.ports import OutgoingMessage
from mesh.secrets import SecretBox, header_binding
from mesh.timeconv import from_duration, from_timestamp
from mesh.topics import call_key
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.internal.v1 import executor_service_pb2 as xpb
from servicecall.v1 import service_call_pb2 as api
from tests.fakes.executor.ports import T0
from tests.fakes.executor.webhook_verifier import verify
from tests.fakes.executor.world import PORT, TOPIC, World, received, request_envelope, seal

FLOW = [
    "produce:execution_started",
    "http:send",
    "produce:execution_succeeded",
    "ack:execution_started",
    "ack:execution_succeeded",
]


async def test_happy_path_announces_sends_and_reports_once() -> None:
    world = World()
    await world.handler(received(request_envelope()))

    assert world.journal == FLOW
    started, succeeded = world.bus.envelopes()
    assert started.execution_started.attempt == 2
    assert started.execution_started.executor_id == "exec-1"
    assert from_timestamp(started.execution_started.start_time) == T0
    assert succeeded.execution_succeeded.attempt == 2
    result = succeeded.execution_succeeded.result
    assert result.response_status == 200
    assert result.error == ""
    assert result.response_snippet == '{"hello":"world"}'[:16]
    assert len(world.executions) == 0


async def test_every_envelope_echoes_the_request_and_is_keyed_by_call() -> None:
    world = World()
    await world.handler(received(request_envelope()))

    assert {m.key for m in world.bus.published} == {call_key("acme", "call-1")}
    assert {m.topic for m in world.bus.published} == {TOPIC}
    envelopes = world.bus.envelopes()
    for envelope in envelopes:
        assert (envelope.tenant_id, envelope.service_call_id, envelope.correlation_id) == (
            "acme",
            "call-1",
            "corr-1",
        )
        assert envelope.sequence == 7
        assert from_timestamp(envelope.occurred_at) == T0
    assert [e.event_id for e in envelopes] == ["evt-1", "evt-2"]


async def test_request_goes_out_as_given_plus_the_executors_headers() -> None:
    world = World()
    envelope = request_envelope(
        method=api.PUT,
        headers={"X-Trace": "abc", "idempotency-key": "spoofed", "Authorization": "Bearer s"},
        body=b"raw \x00 bytes",
        timeout=timedelta(seconds=12),
    )
    await world.handler(received(envelope))

    [sent] = world.http.requests
    assert sent.method == "PUT"
    assert sent.url == f"http://target.example:{PORT}/echo"
    assert sent.body == b"raw \x00 bytes"
    assert sent.timeout == timedelta(seconds=12)
    headers = dict(sent.headers)
    assert headers == {
        "X-Trace": "abc",
        "Authorization": "Bearer s",
        "Idempotency-Key": "idem-call-1",
        "X-ServiceCall-Id": "call-1",
        "X-ServiceCall-Attempt": "2",
    }


async def test_defaults_for_unset_method_and_timeout() -> None:
    world = World()
    envelope = request_envelope(method=api.HTTP_METHOD_UNSPECIFIED, timeout=None)
    await world.handler(received(envelope))
    [sent] = world.http.requests
    assert (sent.method, sent.timeout) == ("POST", timedelta(seconds=30))


async def test_waits_for_not_before_and_never_sends_earlier() -> None:
    world = World()
    world.sleeper.early = timedelta(microseconds=500)  # timers that fire early
    due = T0 + timedelta(seconds=1.5)
    sent_at: list[datetime] = []
    world.http.on_send = lambda _request: sent_at.append(world.clock.now())
    await world.handler(received(request_envelope(not_before=due)))

    assert sent_at and sent_at[0] >= due
    started = world.bus.envelopes()[0].execution_started
    assert from_timestamp(started.start_time) >= due
    # First to the moment the request is prepared, then to not_before itself.
    assert world.sleeper.calls[0] == (timedelta(seconds=1.5) - PREPARE_AHEAD).total_seconds()
    assert sum(world.sleeper.calls) >= 1.5
    assert len(world.sleeper.calls) >= 3  # re-armed after the early wake-ups


async def test_http_goes_out_before_the_started_ack_but_the_handler_waits_for_it() -> None:
    world = World()
    gate = asyncio.Event()
    world.bus.gates["execution_started"] = gate
    task = asyncio.create_task(world.handler(received(request_envelope())))
    for _ in range(5):
        await asyncio.sleep(0)
    assert world.journal[:3] == [
        "produce:execution_started",
        "http:send",
        "produce:execution_succeeded",
    ]
    assert world.journal[:2] == ["produce:execution_started", "http:send"]
    # Started is not acknowledged yet, so the result is not either and the offset stays put.
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    assert world.bus.published == []
    listed = await world.listed()
    assert [e.state for e in listed.executions] == [xpb.Execution.IN_FLIGHT]
    gate.set()
    await task
    assert world.journal == FLOW


async def test_list_executions_shows_waiting_attempts() -> None:
    world = World()
    world.sleeper.gate = asyncio.Event()
    due = T0 + timedelta(seconds=1)
    task = asyncio.create_task(world.handler(received(request_envelope(not_before=due))))
    await world.sleeper.sleeping.wait()

    listed = await world.listed()
    assert listed.executor_id == "exec-1"
    [held] = listed.executions
    assert (held.tenant_id, held.service_call_id, held.attempt) == ("acme", "call-1", 2)
    assert held.state == xpb.Execution.WAITING
    assert from_timestamp(held.not_before) == due
    assert not held.HasField("start_time")
    assert world.bus.published == []

    world.sleeper.gate.set()
    await task
    assert (await world.listed()).executions == []


Check = Callable[[pb.Envelope], None]


def failed_with(
    status: int, error: str, retryable: bool, retry_after: timedelta | None = None
) -> Check:
    def check(envelope: pb.Envelope) -> None:
        assert envelope.WhichOneof("payload") == "execution_failed"
        failed = envelope.execution_failed
        assert failed.attempt == 2
        assert failed.result.response_status == status
        assert failed.result.error == error
        assert failed.retryable is retryable
        if retry_after is None:
            assert not failed.HasField("retry_after")
        else:
            assert from_duration(failed.retry_after) == retry_after

    return check


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("/status/503?retry_after=7", failed_with(503, "http_status", True, timedelta(seconds=7))),
        ("/status/429?retry_after=3", failed_with(429, "http_status", True, timedelta(seconds=3))),
        ("/status/500", failed_with(500, "http_status", True)),
        ("/status/404", failed_with(404, "http_status", False)),
        ("/redirect", failed_with(302, "http_status", False)),
        ("/hang", failed_with(0, "timeout", True)),
    ],
)
async def test_exactly_one_result_per_attempt(path: str, check: Check) -> None:
    world = World()
    await world.handler(received(request_envelope(url=f"http://target.example:{PORT}{path}")))
    [result] = world.results()
    check(result)
    assert world.journal[0] == "produce:execution_started"
    assert world.journal.count("http:send") == 1


@pytest.mark.parametrize(
    ("url", "check"),
    [
        ("http://127.0.0.1:18080/echo", failed_with(0, "egress_denied", False)),
        ("http://169.254.169.254/latest/meta-data", failed_with(0, "egress_denied", False)),
        ("ftp://target.example/x", failed_with(0, "egress_denied", False)),
        ("http://target.example:1/echo", failed_with(0, "connection_error", True)),
    ],
)
async def test_refused_and_unreachable_targets(url: str, check: Check) -> None:
    world = World()
    await world.handler(received(request_envelope(url=url)))
    [result] = world.results()
    check(result)
    assert world.target.seen == []


async def test_snippet_is_bounded_by_the_request_and_masked() -> None:
    world = World()
    body = b'{"password":"hunter2","data":"' + b"y" * 100 + b'"}'
    await world.handler(received(request_envelope(body=body, snippet_bytes=40)))
    snippet = world.results()[0].execution_succeeded.result.response_snippet
    assert "hunter2" not in snippet
    # masked first, then cut to the 40 bytes the request allows
    assert snippet == '{"password":"[REDACTED]","data":"yyyyyyy'
    assert len(snippet.encode()) == 40


async def test_timing_fields_of_the_result() -> None:
    world = World()
    world.http.on_send = lambda _request: world.clock.advance(timedelta(milliseconds=250))
    await world.handler(received(request_envelope()))
    result = world.results()[0].execution_succeeded.result
    assert from_duration(result.duration) == timedelta(milliseconds=250)
    assert from_timestamp(result.end_time) == T0 + timedelta(milliseconds=250)


async def test_a_client_that_raises_still_yields_one_failed_result() -> None:
    world = World()
    world.http.scripted.append(RuntimeError("bug"))
    await world.handler(received(request_envelope()))
    [result] = world.results()
    failed_with(0, "connection_error", True)(result)


async def test_a_failed_result_publish_is_retried_without_sending_again() -> None:
    world = World()

    def fail_result_publishes(_request: HttpRequest) -> None:
        world.bus.failures = 3  # the result's hand-over and two retries fail

    world.http.on_send = fail_result_publishes
    await world.handler(received(request_envelope()))
    payloads = [e.WhichOneof("payload") for e in world.bus.envelopes()]
    assert payloads == ["execution_started", "execution_succeeded"]
    assert world.journal.count("http:send") == 1
    assert world.bus.attempts == 5
    assert world.sleeper.calls == [0.05, 0.1, 0.2]


async def test_a_failed_started_publish_goes_again_before_the_result() -> None:
    world = World()
    world.bus.failures = 1  # Started's hand-over fails; the result's succeeds
    await world.handler(received(request_envelope()))
    envelopes = world.bus.envelopes()
    # The result landed, then Started and the result again, in order, with the same ids:
    # the partition holds Started before a result, and the duplicate is dropped downstream.
    assert [(e.WhichOneof("payload"), e.event_id) for e in envelopes] == [
        ("execution_succeeded", "evt-2"),
        ("execution_started", "evt-1"),
        ("execution_succeeded", "evt-2"),
    ]
    assert world.journal.count("http:send") == 1


async def test_a_producer_that_raises_at_once_is_retried_the_same_way() -> None:
    world = World()
    calls = 0
    enqueue = world.bus.enqueue

    def flaky(messages: Sequence[OutgoingMessage]) -> asyncio.Future[None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BufferError("queue full")
        return enqueue(messages)

    world.bus.enqueue = flaky  # type: ignore[method-assign]
    await world.handler(received(request_envelope()))
    payloads = [e.WhichOneof("payload") for e in world.bus.envelopes()]
    assert payloads == ["execution_succeeded", "execution_started", "execution_succeeded"]


async def test_a_redelivery_joins_the_held_attempt() -> None:
    world = World()
    world.sleeper.gate = asyncio.Event()
    due = T0 + timedelta(seconds=1)
    first = asyncio.create_task(world.handler(received(request_envelope(not_before=due), 0)))
    await world.sleeper.sleeping.wait()
    second = asyncio.create_task(world.handler(received(request_envelope(not_before=due), 1)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not second.done()
    world.sleeper.gate.set()
    await asyncio.gather(first, second)
    assert world.journal.count("http:send") == 1
    assert len(world.results()) == 1


async def test_a_different_attempt_of_the_same_call_is_not_a_duplicate() -> None:
    world = World()
    await world.handler(received(request_envelope(attempt=1)))
    await world.handler(received(request_envelope(attempt=2)))
    assert [e.execution_started.attempt for e in world.bus.envelopes()[::2]] == [1, 2]


async def test_abandoning_cancels_held_attempts_without_a_result() -> None:
    world = World()
    world.sleeper.gate = asyncio.Event()
    task = asyncio.create_task(
        world.handler(received(request_envelope(not_before=T0 + timedelta(seconds=1))))
    )
    await world.sleeper.sleeping.wait()
    assert world.handler.abandon_all() == 1
    with pytest.raises(asyncio.CancelledError):
        await task
    assert world.bus.published == []
    assert len(world.executions) == 0


async def test_undecodable_messages_are_dropped() -> None:
    world = World()
    await world.handler(received(b"\xff\xff not a protobuf"))
    assert world.journal == []


async def test_other_payloads_are_ignored() -> None:
    world = World()
    other = pb.Envelope(
        event_id="x",
        tenant_id="acme",
        service_call_id="call-1",
        timer_requested=pb.TimerRequested(),
    )
    await world.handler(received(other))
    assert world.journal == []


async def test_a_result_failure_error_string_matches_the_enum() -> None:
    world = World()
    world.http.scripted.append(HttpFailure(AttemptError.TLS_ERROR, "bad cert"))
    await world.handler(received(request_envelope()))
    failed_with(0, "tls_error", True)(world.results()[0])


async def test_sealed_headers_are_opened_and_sent_but_never_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = World()
    envelope = request_envelope(
        headers={"X-Trace": "abc"},
        sealed={
            "Authorization": seal("Authorization", "Bearer tok-123"),
            "X-Api-Key": seal("X-Api-Key", "key-456"),
        },
    )
    await world.handler(received(envelope))
    [sent] = world.http.requests
    headers = dict(sent.headers)
    assert headers["Authorization"] == "Bearer tok-123"
    assert headers["X-Api-Key"] == "key-456"
    assert headers["X-Trace"] == "abc"
    assert world.results()[0].WhichOneof("payload") == "execution_succeeded"
    out = capsys.readouterr()
    assert "tok-123" not in out.out + out.err and "key-456" not in out.out + out.err
    for message in world.bus.published:
        assert b"tok-123" not in message.value and b"key-456" not in message.value


async def test_a_sealed_header_cannot_override_the_executors_own_headers() -> None:
    world = World()
    envelope = request_envelope(sealed={"Idempotency-Key": seal("Idempotency-Key", "spoof")})
    await world.handler(received(envelope))
    assert dict(world.http.requests[0].headers)["Idempotency-Key"] == "idem-call-1"


@pytest.mark.parametrize(
    "sealed",
    [
        seal("Authorization", "Bearer x", call="another-call"),  # bound to another call
        seal("X-Api-Key", "Bearer x"),  # bound to another header
        seal("Authorization", "Bearer x", tenant="other"),  # bound to another tenant
        SecretBox({1: bytes(32)}, current=1).seal(  # another mesh's key
            b"Bearer x", header_binding("acme", "call-1", "Authorization")
        ),
        b"\x01garbage",
        b"",
    ],
)
async def test_a_sealed_header_that_does_not_open_fails_the_attempt_without_sending(
    sealed: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World()
    await world.handler(received(request_envelope(sealed={"Authorization": sealed})))
    assert world.http.requests == []
    [result] = world.results()
    failed_with(0, "secret_unreadable", False)(result)
    assert "Bearer x" not in capsys.readouterr().out


async def test_a_tenant_with_signing_secrets_gets_signed_requests() -> None:
    world = World()
    new = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    old = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
    world.signing.keys["acme"] = (SigningSecret.parse(new), SigningSecret.parse(old))
    spoofed = {"webhook-signature": "v1,forged", "X-Trace": "abc"}
    await world.handler(received(request_envelope(headers=spoofed, body=b"payload")))
    [sent] = world.http.requests
    headers = dict(sent.headers)
    assert headers["webhook-id"] == "idem-call-1"  # the same on every retry
    assert headers["webhook-timestamp"] == str(int(T0.timestamp()))
    assert "v1,forged" not in headers["webhook-signature"]
    for secret in (new, old):
        verify(secret, headers, b"payload", now=T0.timestamp())


async def test_a_tenant_without_secrets_is_not_signed() -> None:
    world = World()
    world.signing.keys["other"] = (SigningSecret.parse("whsec_" + "A" * 32),)
    await world.handler(received(request_envelope()))
    assert not any(n.startswith("webhook-") for n, _ in world.http.requests[0].headers)


async def test_a_quick_attempt_reports_its_start_in_the_result_and_sends_no_started() -> None:
    world = World(started_after=timedelta(seconds=30))
    await world.handler(received(request_envelope()))

    [succeeded] = world.bus.envelopes()
    result = succeeded.execution_succeeded.result
    start = from_timestamp(result.end_time) - from_duration(result.duration)
    assert start == T0
    assert len(world.http.requests) == 1


async def test_a_slow_attempt_is_announced_while_in_flight_then_reported() -> None:
    world = World(started_after=timedelta(milliseconds=5))
    world.http.gate = asyncio.Event()
    task = asyncio.create_task(world.handler(received(request_envelope())))

    await asyncio.wait_for(world.bus.publishing.wait(), timeout=5)  # the first hand-over
    assert "produce:execution_started" in world.journal
    assert world.results() == []  # still in flight
    world.http.gate.set()
    await asyncio.wait_for(task, timeout=5)
    started, result = world.bus.envelopes()
    assert started.execution_started.attempt == result.execution_succeeded.attempt == 2
    assert from_timestamp(started.execution_started.start_time) == T0


@dataclass
class TwoAttempts:
    """The first attempt is held in flight until `release`; the second is sent meanwhile and
    answered at once."""

    first: asyncio.Task[None]
    second: asyncio.Task[None]
    release: asyncio.Event
    second_sent: asyncio.Event


async def start_two(world: World) -> TwoAttempts:
    release, first_sent, second_sent = asyncio.Event(), asyncio.Event(), asyncio.Event()

    def on_send(_request: HttpRequest) -> None:
        # The first send awaits the gate it found; the next ones find none.
        world.http.gate = release if len(world.http.requests) == 1 else None
        (first_sent if len(world.http.requests) == 1 else second_sent).set()

    world.http.on_send = on_send
    first = asyncio.create_task(world.handler(received(request_envelope(attempt=1), 0)))
    await first_sent.wait()
    second = asyncio.create_task(world.handler(received(request_envelope(attempt=2), 1)))
    return TwoAttempts(first, second, release, second_sent)


async def test_reports_wait_while_another_attempt_is_sending() -> None:
    world = World(report_defer=timedelta(seconds=30), started_after=timedelta(seconds=30))
    two = await start_two(world)
    await two.second_sent.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    # The second attempt has its reply, but its report waits for the first one's reply.
    assert world.journal == ["http:send", "http:send"]
    assert not two.second.done()
    two.release.set()
    await asyncio.gather(two.first, two.second)
    assert world.journal[2:4] == ["produce:execution_succeeded", "produce:execution_succeeded"]
    assert sorted(e.execution_succeeded.attempt for e in world.results()) == [1, 2]


async def test_a_report_waits_no_longer_than_the_bound() -> None:
    world = World(report_defer=timedelta(milliseconds=50), started_after=timedelta(seconds=30))
    two = await start_two(world)
    # The first request gets no reply in this time; the second reports anyway.
    await asyncio.wait_for(two.second, 5)
    assert not two.first.done()
    assert [e.execution_succeeded.attempt for e in world.results()] == [2]
    two.release.set()
    await two.first


async def test_without_a_bound_reports_do_not_wait() -> None:
    world = World(started_after=timedelta(seconds=30))
    two = await start_two(world)
    await asyncio.wait_for(two.second, 5)
    assert not two.first.done()
    two.release.set()
    await two.first


DUE = timedelta(seconds=3)


async def test_the_request_is_prepared_when_the_attempt_arrives_not_when_it_is_due() -> None:
    world = World()
    world.sleeper.gate = asyncio.Event()  # time stands still before the due instant
    task = asyncio.create_task(world.handler(received(request_envelope(not_before=T0 + DUE))))
    await asyncio.wait_for(world.sleeper.sleeping.wait(), 5)
    [prepared] = world.http.prepared
    assert world.http.requests == []
    assert dict(prepared.headers)["Idempotency-Key"] == "idem-call-1"
    world.sleeper.gate.set()
    await asyncio.wait_for(task, 5)
    assert world.http.requests == [prepared]  # sent as prepared, not prepared again
    assert len(world.http.prepared) == 1


async def test_a_request_with_sealed_headers_is_prepared_only_once_they_are_opened() -> None:
    world = World()
    world.sleeper.gate = asyncio.Event()
    envelope = request_envelope(
        not_before=T0 + DUE, sealed={"Authorization": seal("Authorization", "Bearer tok-123")}
    )
    task = asyncio.create_task(world.handler(received(envelope)))
    await asyncio.wait_for(world.sleeper.sleeping.wait(), 5)
    assert world.http.prepared == []  # no plaintext waits in a held attempt
    world.sleeper.gate.set()
    await asyncio.wait_for(task, 5)
    [prepared] = world.http.prepared
    assert dict(prepared.headers)["Authorization"] == "Bearer tok-123"


async def test_a_signing_tenants_request_is_prepared_again_with_its_signature() -> None:
    world = World()
    world.signing.keys["acme"] = (SigningSecret.parse("whsec_" + "A" * 32),)
    await world.handler(received(request_envelope(not_before=T0 + DUE)))
    early, signed = world.http.prepared
    assert not any(n.startswith("webhook-") for n, _ in early.headers)
    assert world.http.requests == [signed]
    assert dict(signed.headers)["webhook-timestamp"] == str(int((T0 + DUE).timestamp()))


async def test_a_url_refused_when_prepared_fails_at_its_due_time_without_sending() -> None:
    world = World()
    envelope = request_envelope(url="ftp://target.example/x", not_before=T0 + DUE)
    await world.handler(received(envelope))
    assert world.http.requests == []
    [result] = world.results()
    failed_with(0, "egress_denied", False)(result)
    assert world.clock.now() >= T0 + DUE  # reported at its due time, as a send would have been
