"""Schedules end to end, through Envoy (JSON and gRPC) against the real mesh and sink: an
`@every 1s` schedule's calls reach the sink at each occurrence, never before its time and never
twice, also across a SIGKILL and restart of the orchestrator (which runs the materialiser) and
of the scheduler; pause stops them, resume continues; the resource's CRUD, its bad input and
its tenancy answer as the calls' do.

Each arrival is matched to its call by the `Idempotency-Key` the executor sends (the call id),
and the call's `scheduleTime` is its occurrence."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mesh.topics import Topics
from meshctl import mesh, processes
from meshctl.layout import Layout
from meshctl.sink import Arrival, Sink
from meshctl.topic_reader import read_whole_topic
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import schedule_pb2 as sched
from servicecall.v1 import schedule_service_pb2 as ssvc
from servicecall.v1 import schedule_service_pb2_grpc as ssvc_grpc
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from servicecall.v1 import service_call_service_pb2_grpc as svc_grpc
from tests.conftest import KeyRing
from tests.e2e.conftest import HttpResponse, JsonClient, tenant_channel

# The test mesh's HANDOFF_LEAD_S (tests/conftest.py): a call closer than this to its time is
# with the executor already, and a pause cannot take it back; plus room for the pause's own
# round trip (it cancels before it answers).
PAUSE_REACH = timedelta(seconds=1.5)


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def sink_path() -> str:
    return f"/schedules/{uuid.uuid4().hex}"


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def schedule_body(url: str, **extra: Any) -> dict[str, Any]:
    return {"cron": "@every 1s", "callTemplate": {"request": {"url": url}}, **extra}


def violations(response: HttpResponse) -> dict[str, str]:
    assert response.status == 400, response.body
    [detail] = response.body["details"]
    return {v["field"]: v["description"] for v in detail["fieldViolations"]}


def arrivals_at(sink: Sink, path: str) -> list[Arrival]:
    return sink.matching(path)


async def wait_for_arrivals(sink: Sink, path: str, count: int, timeout: float = 30) -> None:
    await sink.wait_for(lambda _: len(arrivals_at(sink, path)) >= count, timeout=timeout)


def call_id_of(arrival: Arrival) -> str:
    call_id = arrival.header("Idempotency-Key")
    assert call_id, arrival.headers
    return call_id


def check_on_time_and_once(arrivals: list[Arrival], occurrence_of: dict[str, datetime]) -> None:
    """Each call arrived once, none before its due time (so none before its occurrence), and
    no two calls share a due time (an occurrence made twice ahead of its time would)."""
    ids = [call_id_of(a) for a in arrivals]
    assert len(ids) == len(set(ids)), "a call arrived twice"
    occurrences = [occurrence_of[i] for i in ids]
    assert len(occurrences) == len(set(occurrences)), "an occurrence was made twice"
    for arrival, occurrence in zip(arrivals, occurrences, strict=True):
        arrived = datetime.fromtimestamp(arrival.arrived_at, UTC)
        assert arrived >= occurrence, f"arrived {occurrence - arrived} early"


def due_times(layout: Layout, arrivals: list[Arrival]) -> dict[str, datetime]:
    """Each arrived call's due time, from its ServiceCallSubmitted on the call-events topic
    (the API shows `scheduleTime` only while a call is under way). A call made ahead of its
    occurrence is due at the occurrence; one made late (after an outage) is due when made,
    so an arrival no earlier than its due time is no earlier than its occurrence either."""
    wanted = {call_id_of(a) for a in arrivals}
    topic = Topics.with_prefix(layout.topic_prefix).call_events
    due: dict[str, datetime] = {}
    for raw in read_whole_topic(layout.kafka_bootstrap, topic):
        envelope = pb.Envelope.FromString(raw)
        if envelope.service_call_id in wanted and envelope.WhichOneof("payload") == "submitted":
            due[envelope.service_call_id] = envelope.submitted.due_time.ToDatetime(tzinfo=UTC)
    assert set(due) == wanted, wanted - set(due)
    return due


async def test_an_every_second_schedule_through_json_pause_resume_delete(
    json_api: JsonClient, sink: Sink, running_mesh: Layout
) -> None:
    t = tenant()
    base = f"/v1/tenants/{t}/schedules"
    path, witness_path = sink_path(), sink_path()
    created = json_api.request(
        "POST", base, schedule_body(sink.url(path), scheduleId="every-second")
    )
    assert created.status == 201, created.body
    assert created.headers["location"] == f"{base}/every-second"
    body = created.body
    assert (body["name"], body["state"]) == (f"tenants/{t}/schedules/every-second", "ACTIVE")
    assert body["etag"] == 'W/"1"' and "nextOccurrenceTime" in body

    await sink.wait_for(lambda _: len(arrivals_at(sink, path)) >= 3, timeout=30)
    got = json_api.request("GET", f"{base}/every-second")
    assert got.status == 200 and "lastOccurrenceTime" in got.body

    paused = json_api.request("POST", f"{base}/every-second:pause", {})
    assert paused.status == 200, paused.body
    assert paused.body["state"] == "PAUSED" and "nextOccurrenceTime" not in paused.body
    paused_at = datetime.now(UTC)
    # The event to wait on: another schedule's calls, to see time pass on the mesh's clock.
    witness = json_api.request("POST", base, schedule_body(sink.url(witness_path)))
    assert witness.status == 201, witness.body
    await sink.wait_for(lambda _: len(arrivals_at(sink, witness_path)) >= 4, timeout=30)
    before_resume = arrivals_at(sink, path)
    occurrences = due_times(running_mesh, before_resume)
    late = [o for o in occurrences.values() if o > paused_at + PAUSE_REACH]
    assert late == [], "calls for occurrences after the pause arrived"

    resumed = json_api.request("POST", f"{base}/every-second:resume", {})
    assert resumed.status == 200, resumed.body
    assert resumed.body["state"] == "ACTIVE"
    resumed_at = datetime.now(UTC)
    await sink.wait_for(lambda _: len(arrivals_at(sink, path)) >= len(before_resume) + 2, 30)
    arrivals = arrivals_at(sink, path)
    occurrences = due_times(running_mesh, arrivals)
    check_on_time_and_once(arrivals, occurrences)
    # Resumed from the first occurrence after now: none that fell while paused was made.
    assert not [o for o in occurrences.values() if paused_at + PAUSE_REACH < o <= resumed_at], (
        "an occurrence that fell while paused was made"
    )

    for name in ("every-second", witness.body["scheduleId"]):
        deleted = json_api.request("DELETE", f"{base}/{name}")
        assert deleted.status == 200, deleted.body
    assert json_api.request("GET", f"{base}/every-second").status == 404
    assert json_api.request("DELETE", f"{base}/every-second").status == 404


def _pid_file(layout: Layout, name: str) -> Any:
    return next(c.pid_file for c in mesh.components(layout) if c.name == name)


def kill_and_restart(layout: Layout, name: str) -> None:
    """SIGKILL to this session's `name` (by its pid file, never by name), then a new one."""
    pid_file = _pid_file(layout, name)
    pid = processes.running_pid(pid_file, str(layout.run_dir))
    assert pid is not None, f"the test mesh's {name} is not running"
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    deadline = time.monotonic() + 10
    while processes.running_pid(pid_file, str(layout.run_dir)) is not None:
        assert time.monotonic() < deadline, f"the {name} did not die"
        time.sleep(0.01)
    pid_file.unlink(missing_ok=True)
    mesh.start_services(layout, only=(name,))
    mesh.wait_healthy(layout, only=(name,))


def restart_if_down(layout: Layout, name: str) -> None:
    if processes.running_pid(_pid_file(layout, name), str(layout.run_dir)) is None:
        mesh.start_services(layout, only=(name,))
        mesh.wait_healthy(layout, only=(name,))


@pytest.fixture
async def envoy_channel(running_mesh: Layout, key_ring: KeyRing) -> AsyncIterator[grpc.aio.Channel]:
    async with tenant_channel(f"127.0.0.1:{running_mesh.envoy_port}", key_ring) as channel:
        yield channel


async def test_an_every_second_schedule_through_grpc_survives_kills_without_doubles(
    running_mesh: Layout, sink: Sink, envoy_channel: grpc.aio.Channel
) -> None:
    schedules: ssvc_grpc.ScheduleServiceAsyncStub = ssvc_grpc.ScheduleServiceStub(envoy_channel)
    calls: svc_grpc.ServiceCallServiceAsyncStub = svc_grpc.ServiceCallServiceStub(envoy_channel)
    t, path = tenant(), sink_path()
    create = schedules.CreateSchedule(
        ssvc.CreateScheduleRequest(
            tenant_id=t,
            schedule=sched.Schedule(
                cron="@every 1s",
                call_template=api.ServiceCall(request=api.HttpRequest(url=sink.url(path))),
                missed_occurrence_policy=sched.Schedule.FIRE_ALL,
            ),
        )
    )
    created = await create
    metadata = dict(await create.initial_metadata())
    assert metadata["location"] == f"/v1/tenants/{t}/schedules/{created.schedule_id}"
    assert created.state == sched.Schedule.ACTIVE and len(created.schedule_id) == 36
    try:
        await sink.wait_for(lambda _: len(arrivals_at(sink, path)) >= 2, timeout=30)
        for name in ("orchestrator", "scheduler"):
            seen = len(arrivals_at(sink, path))
            kill_and_restart(running_mesh, name)
            await wait_for_arrivals(sink, path, seen + 3, timeout=60)
    finally:
        for name in ("orchestrator", "scheduler"):
            restart_if_down(running_mesh, name)
    arrivals = arrivals_at(sink, path)
    occurrences = due_times(running_mesh, arrivals)
    check_on_time_and_once(arrivals, occurrences)
    keys = set()
    for arrival in arrivals:
        call = await calls.GetServiceCall(
            svc.GetServiceCallRequest(tenant_id=t, service_call_id=call_id_of(arrival))
        )
        assert call.state == api.ServiceCall.SUCCEEDED
        keys.add(call.idempotency_key)
    assert len(keys) == len(arrivals)  # one occurrence each
    await schedules.DeleteSchedule(
        ssvc.DeleteScheduleRequest(tenant_id=t, schedule_id=created.schedule_id)
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await schedules.GetSchedule(
            ssvc.GetScheduleRequest(tenant_id=t, schedule_id=created.schedule_id)
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def later_body(**extra: Any) -> dict[str, Any]:
    """A schedule whose first occurrence is a day away: it makes no call during the test."""
    start = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    return schedule_body("http://127.0.0.1:9/never", startTime=start, **extra)


def test_schedules_are_listed_got_and_updated_through_json(json_api: JsonClient) -> None:
    t = tenant()
    base = f"/v1/tenants/{t}/schedules"
    for name in ("c-sched", "a-sched", "b-sched"):
        made = json_api.request("POST", base, later_body(scheduleId=name))
        assert made.status == 201, made.body
    first = json_api.request("GET", f"{base}?pageSize=2")
    assert first.status == 200, first.body
    assert [s["scheduleId"] for s in first.body["schedules"]] == ["a-sched", "b-sched"]
    token = first.body["nextPageToken"]
    rest = json_api.request("GET", f"{base}?pageSize=2&pageToken={token}")
    assert [s["scheduleId"] for s in rest.body["schedules"]] == ["c-sched"]
    assert not rest.body.get("nextPageToken")
    # A token is bound to its tenant's listing.
    other = json_api.request("GET", f"/v1/tenants/{tenant()}/schedules?pageToken={token}")
    assert "page_token" in violations(other)

    got = json_api.request("GET", f"{base}/a-sched")
    assert got.status == 200 and got.body["etag"] == 'W/"1"'
    updated = json_api.request(
        "PATCH",
        f"{base}/a-sched?updateMask=description,cron",
        {"description": "every 5 s", "cron": "@every 5s", "etag": got.body["etag"]},
    )
    assert updated.status == 200, updated.body
    assert (updated.body["description"], updated.body["cron"]) == ("every 5 s", "@every 5s")
    assert updated.body["etag"] == 'W/"2"'
    # The mask left the template alone.
    assert updated.body["callTemplate"]["request"]["url"] == "http://127.0.0.1:9/never"
    stale = json_api.request(
        "PATCH",
        f"{base}/a-sched?updateMask=description",
        {"description": "lost", "etag": got.body["etag"]},
    )
    assert stale.status == 409, stale.body
    assert json_api.request("GET", f"{base}/a-sched").body["description"] == "every 5 s"
    bad_mask = json_api.request("PATCH", f"{base}/a-sched?updateMask=state", {"description": "x"})
    assert "update_mask" in violations(bad_mask)
    taken = json_api.request("POST", base, later_body(scheduleId="a-sched"))
    assert taken.status == 409, taken.body


def test_bad_schedules_are_refused_with_every_field_named_through_json(
    json_api: JsonClient,
) -> None:
    t = tenant()
    refused = json_api.request(
        "POST",
        f"/v1/tenants/{t}/schedules",
        {
            "cron": "every day at noon",
            "timeZone": "Mars/Olympus_Mons",
            "callTemplate": {"request": {"url": "ftp://example.test/x"}},
        },
    )
    assert set(violations(refused)) == {
        "schedule.cron",
        "schedule.time_zone",
        "schedule.call_template.request.url",
    }
    assert json_api.request("GET", f"/v1/tenants/{t}/schedules").body.get("schedules") in (
        None,
        [],
    )


async def test_bad_schedules_are_invalid_argument_over_grpc(
    envoy_channel: grpc.aio.Channel,
) -> None:
    schedules: ssvc_grpc.ScheduleServiceAsyncStub = ssvc_grpc.ScheduleServiceStub(envoy_channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await schedules.CreateSchedule(
            ssvc.CreateScheduleRequest(
                tenant_id=tenant(),
                schedule=sched.Schedule(
                    cron="61 * * * * *",
                    time_zone="Nowhere/Special",
                    call_template=api.ServiceCall(request=api.HttpRequest(url="not a url")),
                ),
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert {v.field for v in bad.field_violations} == {
        "schedule.cron",
        "schedule.time_zone",
        "schedule.call_template.request.url",
    }
    with pytest.raises(grpc.aio.AioRpcError) as mask:
        await schedules.UpdateSchedule(
            ssvc.UpdateScheduleRequest(
                tenant_id=tenant(),
                schedule_id="x",
                schedule=sched.Schedule(),
                update_mask=field_mask_pb2.FieldMask(paths=["etag"]),
            )
        )
    assert mask.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_id_no_schedule_could_have_is_invalid_argument_before_any_query(
    envoy_channel: grpc.aio.Channel,
) -> None:
    # Found by the gRPC fuzz: a NUL in the id reached Postgres, which refused it (UNKNOWN).
    schedules: ssvc_grpc.ScheduleServiceAsyncStub = ssvc_grpc.ScheduleServiceStub(envoy_channel)
    owner = tenant()
    for bad_id in ("\x0f\n\x00", "UPPER", "a" * 64):
        for rpc in (
            schedules.GetSchedule(ssvc.GetScheduleRequest(tenant_id=owner, schedule_id=bad_id)),
            schedules.PauseSchedule(ssvc.PauseScheduleRequest(tenant_id=owner, schedule_id=bad_id)),
            schedules.ResumeSchedule(
                ssvc.ResumeScheduleRequest(tenant_id=owner, schedule_id=bad_id)
            ),
            schedules.DeleteSchedule(
                ssvc.DeleteScheduleRequest(tenant_id=owner, schedule_id=bad_id)
            ),
            schedules.UpdateSchedule(
                ssvc.UpdateScheduleRequest(
                    tenant_id=owner, schedule_id=bad_id, schedule=sched.Schedule(description="x")
                )
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await rpc
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad_id, refused)
            status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
            assert status is not None
            bad = error_details_pb2.BadRequest()
            assert status.details[0].Unpack(bad)
            assert [v.field for v in bad.field_violations] == ["schedule_id"]


async def test_another_tenant_s_schedule_is_not_found(
    json_api: JsonClient, envoy_channel: grpc.aio.Channel
) -> None:
    owner, intruder = tenant(), tenant()
    made = json_api.request("POST", f"/v1/tenants/{owner}/schedules", later_body())
    assert made.status == 201, made.body
    schedule_id = made.body["scheduleId"]
    theirs = f"/v1/tenants/{owner}/schedules/{schedule_id}"
    for method, suffix, body in (
        ("GET", "", None),
        ("POST", ":pause", {}),
        ("POST", ":resume", {}),
        ("PATCH", "", {"description": "mine now"}),
        ("DELETE", "", None),
    ):
        answer = json_api.request(method, theirs + suffix, body, as_tenant=intruder)
        assert answer.status == 404, (method, suffix, answer.body)
    # Under the intruder's own tenant the id names nothing.
    mine = json_api.request("GET", f"/v1/tenants/{intruder}/schedules/{schedule_id}")
    assert mine.status == 404
    listed = json_api.request("GET", f"/v1/tenants/{owner}/schedules", as_tenant=intruder)
    assert listed.status == 404
    assert json_api.request("GET", theirs).body.get("description", "") == ""
    schedules: ssvc_grpc.ScheduleServiceAsyncStub = ssvc_grpc.ScheduleServiceStub(envoy_channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await schedules.GetSchedule(
            ssvc.GetScheduleRequest(tenant_id=owner, schedule_id=schedule_id),
            metadata=(("authorization", f"Bearer {json_api.key_ring.for_tenant(intruder)}"),),
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert json_api.request("DELETE", theirs).status == 200
