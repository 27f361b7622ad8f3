"""The target's traceparent: the mesh's, unless the call spec names its own trace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from executor.domain.execution import CallRef, ExecutionOrder, HttpRequest

OURS = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)


def order(headers: tuple[tuple[str, str], ...] = ()) -> ExecutionOrder:
    return ExecutionOrder(
        call=CallRef("acme", "call-1", "corr-1", 1),
        attempt=1,
        not_before=datetime(2030, 1, 1, tzinfo=UTC),
        lease_expires_at=None,
        request=HttpRequest("POST", "http://t/", headers, b"", timedelta(seconds=5)),
        idempotency_key="k",
        snippet_bytes=256,
    )


def test_the_mesh_context_is_sent_when_the_spec_sets_none() -> None:
    sent = dict(order().outgoing_request(trace=OURS).headers)
    assert sent["traceparent"] == OURS[0][1]


def test_a_traceparent_in_the_spec_is_kept() -> None:
    theirs = (("TraceParent", "00-11111111111111111111111111111111-2222222222222222-01"),)
    sent = order(theirs).outgoing_request(trace=(*OURS, ("tracestate", "m=1"))).headers
    assert [(n, v) for n, v in sent if n.lower() in ("traceparent", "tracestate")] == list(theirs)


def test_a_secret_traceparent_is_kept_too() -> None:
    theirs = (("traceparent", "00-11111111111111111111111111111111-2222222222222222-01"),)
    sent = order().outgoing_request(opened=theirs, trace=OURS).headers
    assert [v for n, v in sent if n == "traceparent"] == [theirs[0][1]]


def test_no_context_adds_nothing() -> None:
    plain = order((("a", "1"),))
    assert plain.outgoing_request(trace=()) == plain.outgoing_request()
    assert not any(n == "traceparent" for n, _ in plain.outgoing_request().headers)
