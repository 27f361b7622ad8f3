"""Queues and ordering keys end to end (#18), through Envoy (JSON and gRPC) against the real
mesh and sink: a queue at 5 calls/s delivers 50 due-now calls over ~10 s and never faster
(checked on every window at the sink); a paused queue holds its due calls (SCHEDULED, with a
held_reason) and resume sends them in due order; purge cancels what is pending, with the
count, and again cancels nothing; two calls with one ordering key never overlap at the sink
and arrive in due order while another key's calls run beside them; the resource's CRUD and
bad input answer as the other resources' do."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from meshctl.layout import Layout
from meshctl.sink import Arrival, Sink
from servicecall.v1 import queue_pb2
from servicecall.v1 import queue_service_pb2 as qsvc
from servicecall.v1 import queue_service_pb2_grpc as qsvc_grpc
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.conftest import KeyRing
from tests.e2e.conftest import HttpResponse, JsonClient, tenant_channel
from tests.waiting import eventually

# How much earlier than the rate allows an arrival may come at the sink and still count as
# "not faster": the executor's send timer and the loopback hop add a few ms of jitter to
# each arrival, so arrival i may be late while arrival i+5 is on time.
RATE_TOLERANCE_S = 0.1


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def sink_path(prefix: str = "/queues") -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


def violations(response: HttpResponse) -> dict[str, str]:
    assert response.status == 400, response.body
    [detail] = response.body["details"]
    return {v["field"]: v["description"] for v in detail["fieldViolations"]}


def submit_json(json_api: JsonClient, t: str, url: str, **call: Any) -> dict[str, Any]:
    created = json_api.request(
        "POST", f"/v1/tenants/{t}/service-calls", {"serviceCall": {"request": {"url": url}, **call}}
    )
    assert created.status == 201, created.body
    body: dict[str, Any] = created.body
    return body


def arrivals_under(sink: Sink, prefix: str) -> list[Arrival]:
    return [a for a in sink.arrivals if a.path.startswith(prefix + "/")]


@pytest.fixture
async def envoy_channel(running_mesh: Layout, key_ring: KeyRing) -> AsyncIterator[grpc.aio.Channel]:
    async with tenant_channel(f"127.0.0.1:{running_mesh.envoy_port}", key_ring) as channel:
        yield channel


async def test_a_queue_at_five_a_second_sends_fifty_calls_over_ten_seconds_never_faster(
    json_api: JsonClient, sink: Sink
) -> None:
    t = tenant()
    created = json_api.request(
        "POST",
        f"/v1/tenants/{t}/queues",
        {"queueId": "five", "maxDispatchesPerSecond": 5, "maxBurstSize": 1},
    )
    assert created.status == 201, created.body
    assert created.headers["location"] == f"/v1/tenants/{t}/queues/five"
    assert created.body["state"] == "RUNNING" and created.body["etag"] == 'W/"1"'
    prefix = sink_path("/rate")
    items = [
        {"serviceCall": {"request": {"url": sink.url(f"{prefix}/{n}")}, "queue": "five"}}
        for n in range(50)
    ]
    batch = json_api.request("POST", f"/v1/tenants/{t}/service-calls:batchSubmit", {"items": items})
    assert batch.status == 200, batch.body
    assert all("serviceCall" in r for r in batch.body["results"]), batch.body
    assert {r["serviceCall"]["queue"] for r in batch.body["results"]} == {"five"}

    await sink.wait_for(lambda _: len(arrivals_under(sink, prefix)) >= 50, timeout=60)
    times = sorted(a.arrived_at for a in arrivals_under(sink, prefix))
    assert len(times) == 50
    # Every window: the i-th and the (i+5)-th arrival are at least a second apart (5/s,
    # burst 1), so no second holds more than 5; and the whole takes about 49/5 s.
    gaps = [times[i + 5] - times[i] for i in range(len(times) - 5)]
    assert min(gaps) >= 1.0 - RATE_TOLERANCE_S, min(gaps)
    span = times[-1] - times[0]
    print(
        f"\n50 calls at 5/s (burst 1): span {span:.3f} s, shortest 5-call window {min(gaps):.3f} s"
    )
    assert 9.8 - RATE_TOLERANCE_S <= span <= 12.0, span


async def test_pause_holds_due_calls_and_resume_sends_them_in_due_order(
    envoy_channel: grpc.aio.Channel, json_api: JsonClient, sink: Sink
) -> None:
    queues: qsvc_grpc.QueueServiceAsyncStub = qsvc_grpc.QueueServiceStub(envoy_channel)
    calls: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(envoy_channel)
    t = tenant()
    made = await queues.CreateQueue(
        qsvc.CreateQueueRequest(
            tenant_id=t,
            queue=queue_pb2.Queue(queue_id="held", max_dispatches_per_second=5),
        )
    )
    paused = await queues.PauseQueue(
        qsvc.PauseQueueRequest(tenant_id=t, queue_id="held", etag=made.etag)
    )
    assert paused.state == queue_pb2.Queue.PAUSED
    again = await queues.PauseQueue(qsvc.PauseQueueRequest(tenant_id=t, queue_id="held"))
    assert again.etag == paused.etag  # pausing a paused queue changes nothing

    prefix = sink_path("/paused")
    ids = []
    for n in range(6):
        call = api.ServiceCall(request=api.HttpRequest(url=sink.url(f"{prefix}/{n}")), queue="held")
        # Due one after another, 100 ms apart, the first in 0.1 s.
        due = datetime.now(UTC).timestamp() + 0.1 * (n + 1)
        call.schedule_time.FromNanoseconds(int(due * 1e9))
        made_call = await calls.SubmitServiceCall(
            svc.SubmitServiceCallRequest(tenant_id=t, service_call=call)
        )
        ids.append(made_call.service_call_id)
    # The event that shows time passed on the mesh: an unqueued call due after them all.
    witness = sink_path("/witness")
    submit_json(json_api, t, sink.url(witness), scheduleTime=_in(1.5))
    await sink.wait_for(lambda _: bool(sink.matching(witness)), timeout=30)
    assert arrivals_under(sink, prefix) == [], "a call of a paused queue was sent"
    for call_id in ids:
        got = await calls.GetServiceCall(
            svc.GetServiceCallRequest(tenant_id=t, service_call_id=call_id)
        )
        assert got.state == api.ServiceCall.SCHEDULED
        assert got.held_reason == 'held by paused queue "held"', got.held_reason
        assert got.queue == "held"

    resumed = await queues.ResumeQueue(qsvc.ResumeQueueRequest(tenant_id=t, queue_id="held"))
    assert resumed.state == queue_pb2.Queue.RUNNING
    await sink.wait_for(lambda _: len(arrivals_under(sink, prefix)) >= 6, timeout=30)
    order = [int(a.path.rsplit("/", 1)[1]) for a in arrivals_under(sink, prefix)]
    assert order == list(range(6)), order
    times = [a.arrived_at for a in arrivals_under(sink, prefix)]
    assert times[-1] - times[0] >= 1.0 - RATE_TOLERANCE_S  # 6 at 5/s: the rate held on resume


async def test_purge_cancels_every_pending_call_and_again_none(
    json_api: JsonClient, sink: Sink
) -> None:
    t = tenant()
    base = f"/v1/tenants/{t}/queues"
    assert json_api.request("POST", base, {"queueId": "purged"}).status == 201
    assert json_api.request("POST", f"{base}/purged:pause", {}).status == 200
    url = sink.url(sink_path("/purged"))
    held = [submit_json(json_api, t, url, queue="purged") for _ in range(4)]
    later = [
        submit_json(json_api, t, url, queue="purged", scheduleTime=_in(3600)) for _ in range(3)
    ]
    await eventually(
        lambda: all(
            json_api.request("GET", f"/v1/tenants/{t}/service-calls/{c['serviceCallId']}").body.get(
                "heldReason"
            )
            for c in held
        ),
        timeout=10,
    )
    refused = json_api.request("DELETE", f"{base}/purged")
    assert refused.status == 400 and "purge it first" in refused.body["message"], refused.body

    purged = json_api.request("POST", f"{base}/purged:purge", {})
    assert purged.status == 200, purged.body
    assert int(purged.body["canceledCount"]) == 7
    for c in held + later:
        got = json_api.request("GET", f"/v1/tenants/{t}/service-calls/{c['serviceCallId']}")
        assert got.body["state"] == "CANCELED"
    again = json_api.request("POST", f"{base}/purged:purge", {})
    assert int(again.body.get("canceledCount", 0)) == 0
    submit_json(json_api, t, url, queue="purged", scheduleTime=_in(3600))
    third = json_api.request("POST", f"{base}/purged:purge", {})
    assert int(third.body["canceledCount"]) == 1
    assert json_api.request("DELETE", f"{base}/purged").status == 200
    assert json_api.request("GET", f"{base}/purged").status == 404


async def test_one_ordering_key_never_overlaps_and_keeps_due_order_other_keys_run_beside(
    json_api: JsonClient, sink: Sink
) -> None:
    t = tenant()
    slow_ms = 700
    prefix = sink_path(f"/slow/{slow_ms}")
    for n in range(3):
        for key in ("a", "b"):
            submit_json(json_api, t, sink.url(f"{prefix}/{key}/{n}"), orderingKey=f"key-{key}")
    await sink.wait_for(lambda _: len(arrivals_under(sink, prefix)) >= 6, timeout=60)
    by_key: dict[str, list[Arrival]] = {"a": [], "b": []}
    for arrival in arrivals_under(sink, prefix):
        by_key[arrival.path.split("/")[-2]].append(arrival)
    for key, arrivals in by_key.items():
        assert [a.path.rsplit("/", 1)[1] for a in arrivals] == ["0", "1", "2"], key
        for first, second in itertools.pairwise(arrivals):
            # The sink answers `slow_ms` after arrival: the next call of the key arrived
            # after the previous one had its answer.
            assert second.arrived_at - first.arrived_at >= slow_ms / 1000, key
    gaps = [
        b.arrived_at - a.arrived_at for arr in by_key.values() for a, b in itertools.pairwise(arr)
    ]
    print(f"\none key, sink answering in {slow_ms} ms: next call {min(gaps):.3f}-{max(gaps):.3f} s")
    # The keys ran beside each other: their first calls were at the sink at once.
    assert abs(by_key["a"][0].arrived_at - by_key["b"][0].arrived_at) < slow_ms / 1000


async def test_the_queue_resource_and_its_bad_input(json_api: JsonClient, sink: Sink) -> None:
    t = tenant()
    base = f"/v1/tenants/{t}/queues"
    default = json_api.request("GET", f"{base}/default")
    assert default.status == 200, default.body
    assert default.body["queueId"] == "default" and default.body["state"] == "RUNNING"
    assert json_api.request("POST", base, {"queueId": "default"}).status == 409
    bad = violations(
        json_api.request(
            "POST", base, {"queueId": "Bad_Id", "maxDispatchesPerSecond": -1, "maxBurstSize": -2}
        )
    )
    assert set(bad) == {"queue.queue_id", "queue.max_dispatches_per_second", "queue.max_burst_size"}
    assert json_api.request("POST", base, {"queueId": "b"}).status == 201
    assert json_api.request("POST", base, {"queueId": "b"}).status == 409
    listed = json_api.request("GET", base)
    assert [q["queueId"] for q in listed.body["queues"]] == ["b", "default"]
    updated = json_api.request(
        "PATCH",
        f"{base}/b?updateMask=maxConcurrentDispatches",
        {"maxConcurrentDispatches": 3, "maxDispatchesPerSecond": 9},
    )
    assert updated.status == 200, updated.body
    assert updated.body["maxConcurrentDispatches"] == 3
    assert updated.body["maxDispatchesPerSecond"] == 0  # not in the mask: unchanged
    stale = json_api.request(
        "PATCH", f"{base}/b", {"etag": 'W/"1"', "orderingFailurePolicy": "SKIP"}
    )
    assert stale.status == 409, stale.body  # ABORTED
    assert json_api.request("DELETE", f"{base}/default").status == 400
    assert json_api.request("GET", f"{base}/nope").status == 404
    assert json_api.request("GET", f"{base}/NOPE").status == 400
    missing = json_api.request(
        "POST",
        f"/v1/tenants/{t}/service-calls",
        {"serviceCall": {"request": {"url": sink.url("/x")}, "queue": "nope"}},
    )
    assert missing.status == 404, missing.body
    bad_call = violations(
        json_api.request(
            "POST",
            f"/v1/tenants/{t}/service-calls",
            {
                "serviceCall": {
                    "request": {"url": sink.url("/x")},
                    "queue": "Bad",
                    "orderingKey": "a\u0000",
                }
            },
        )
    )
    assert set(bad_call) == {"service_call.queue", "service_call.ordering_key"}
    plain = submit_json(json_api, t, sink.url(sink_path()), scheduleTime=_in(3600))
    assert plain["queue"] == "default" and plain.get("orderingKey", "") == ""
    other = tenant()
    assert json_api.request("GET", f"{base}/b", as_tenant=other).status == 404


async def test_update_mask_through_grpc(envoy_channel: grpc.aio.Channel) -> None:
    queues: qsvc_grpc.QueueServiceAsyncStub = qsvc_grpc.QueueServiceStub(envoy_channel)
    t = tenant()
    changed = await queues.UpdateQueue(
        qsvc.UpdateQueueRequest(
            tenant_id=t,
            queue_id="default",
            queue=queue_pb2.Queue(max_dispatches_per_second=50, max_burst_size=7),
            update_mask=field_mask_pb2.FieldMask(paths=["max_dispatches_per_second"]),
        )
    )
    assert changed.max_dispatches_per_second == 50 and changed.max_burst_size == 0
    assert changed.HasField("create_time")
    listed = await queues.ListQueues(qsvc.ListQueuesRequest(tenant_id=t))
    assert [q.queue_id for q in listed.queues] == ["default"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await queues.DeleteQueue(qsvc.DeleteQueueRequest(tenant_id=t, queue_id="default"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Back to unlimited, so this tenant's default queue gates nothing again.
    await queues.UpdateQueue(
        qsvc.UpdateQueueRequest(
            tenant_id=t,
            queue_id="default",
            queue=queue_pb2.Queue(),
            update_mask=field_mask_pb2.FieldMask(paths=["max_dispatches_per_second"]),
        )
    )


async def test_a_schedule_s_occurrences_go_through_its_template_s_queue_and_key(
    json_api: JsonClient, sink: Sink
) -> None:
    t = tenant()
    base = f"/v1/tenants/{t}"
    prefix = sink_path("/scheduled")
    tag = f"ticker-{uuid.uuid4().hex[:8]}"
    template = {
        "request": {"url": sink.url(f"{prefix}/tick")},
        "queue": "ticks",
        "orderingKey": "one",
        "tags": [tag],
    }
    schedule = {"scheduleId": "ticker", "cron": "@every 1s", "callTemplate": template}
    unknown = violations(json_api.request("POST", f"{base}/schedules", schedule))
    assert set(unknown) == {"schedule.call_template.queue"}, unknown
    assert json_api.request("POST", f"{base}/queues", {"queueId": "ticks"}).status == 201
    assert json_api.request("POST", f"{base}/queues/ticks:pause", {}).status == 200
    created = json_api.request("POST", f"{base}/schedules", schedule)
    assert created.status == 201, created.body
    shown = created.body["callTemplate"]
    assert (shown["queue"], shown["orderingKey"]) == ("ticks", "one")

    def calls(*states: str) -> list[dict[str, Any]]:
        query = "&".join([f"tags={tag}", "pageSize=100", *(f"states={s}" for s in states)])
        listed = json_api.request("GET", f"{base}/service-calls?{query}")
        assert listed.status == 200, listed.body
        found: list[dict[str, Any]] = listed.body.get("serviceCalls", [])
        return found

    def held_past_due() -> int:
        # Held once its hand-off comes (the lead before its time); counted once it is due,
        # because deleting the schedule cancels the occurrences still to come.
        now = datetime.now(UTC)
        return sum(bool(c.get("heldReason")) and _at(c["scheduleTime"]) < now for c in calls())

    # Occurrences come due and wait in the paused queue, not at the sink.
    await eventually(lambda: held_past_due() >= 2, interval=0.2)
    assert json_api.request("DELETE", f"{base}/schedules/ticker").status == 200
    pending = calls("SCHEDULED")  # the delete canceled the occurrences still to come
    assert len(pending) >= 2
    for call in pending:
        assert (call["queue"], call["orderingKey"]) == ("ticks", "one"), call
    assert arrivals_under(sink, prefix) == [], "a call of a paused queue was sent"
    due_of = {c["serviceCallId"]: c["scheduleTime"] for c in pending}

    assert json_api.request("POST", f"{base}/queues/ticks:resume", {}).status == 200
    await sink.wait_for(lambda _: len(arrivals_under(sink, prefix)) >= len(pending), timeout=30)
    arrived = [a.header("Idempotency-Key") or "" for a in arrivals_under(sink, prefix)]
    assert sorted(arrived) == sorted(due_of), "each held occurrence arrived once"
    assert arrived == sorted(arrived, key=lambda i: due_of[i])  # one key: in due order


def _in(seconds: float) -> str:
    return (
        datetime.fromtimestamp(datetime.now(UTC).timestamp() + seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
