"""An executor killed in the middle of a request, or away when a call is handed off: the call
gets one more attempt with the same idempotency key, and exactly one terminal state. The last
two tests keep the executor down past the dispatch lease / attempt deadline, so only the
orchestrator's watchdog (orchestrator/entrypoints/watchdog.py) can move the call on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from mesh.topics import Topics
from meshctl import mesh, processes
from meshctl.layout import Layout
from meshctl.topic_reader import read_whole_topic
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import service_call_pb2 as api
from tests.e2e.conftest import CallEvents, JsonClient
from tests.e2e.test_executor_paths import ScriptedSink, fetch, submit, tenant
from tests.waiting import eventually


@pytest.fixture(scope="module")
async def scripted_sink() -> AsyncIterator[ScriptedSink]:
    sink = ScriptedSink()
    await sink.start()
    yield sink
    await sink.stop()


def kill_executor(layout: Layout) -> None:
    """SIGKILL to the executor this test session started (by its pid file, never by name)."""
    pid_file = layout.run_dir / "executor.pid"
    pid = processes.running_pid(pid_file, str(layout.run_dir))
    assert pid is not None, "the test mesh's executor is not running"
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # our child: reap it, so no zombie looks alive
    deadline = time.monotonic() + 10
    while processes.running_pid(pid_file, str(layout.run_dir)) is not None:
        assert time.monotonic() < deadline, "the executor did not die"
        time.sleep(0.01)
    pid_file.unlink(missing_ok=True)


def restart_executor_if_down(layout: Layout) -> None:
    """Leaves the session's mesh with an executor for the other tests, whatever happened."""
    if processes.running_pid(layout.run_dir / "executor.pid", str(layout.run_dir)) is None:
        mesh.start_services(layout, only=("executor",))
        mesh.wait_healthy(layout, only=("executor",))


def execution_requests(layout: Layout, call_id: str) -> list[pb.ExecutionRequested]:
    topic = Topics.with_prefix(layout.topic_prefix).execution_requests
    envelopes = map(pb.Envelope.FromString, read_whole_topic(layout.kafka_bootstrap, topic))
    return [e.execution_requested for e in envelopes if e.service_call_id == call_id]


async def test_a_killed_executor_leads_to_one_more_attempt_and_one_terminal_state(
    json_api: JsonClient,
    scripted_sink: ScriptedSink,
    call_events: CallEvents,
    running_mesh: Layout,
) -> None:
    t = tenant()
    # Slow on its first arrival only: the executor is killed while it waits for the answer.
    path = f"/slow-once/5000/{uuid.uuid4().hex}"
    call_id = submit(
        json_api,
        t,
        {"url": scripted_sink.url(path), "attemptTimeout": "20s"},
        retryPolicy={"maxAttempts": 3, "minBackoff": "0.1s", "jitter": 0},
    )
    await scripted_sink.wait_for(lambda _: len(scripted_sink.matching(path)) >= 1, timeout=30)
    kill_executor(running_mesh)
    try:
        mesh.start_services(running_mesh, only=("executor",))
        mesh.wait_healthy(running_mesh, only=("executor",))
        completed = await call_events.completed(call_id, timeout=90)
    finally:
        restart_executor_if_down(running_mesh)

    arrivals = scripted_sink.matching(path)
    assert len(arrivals) == 2, [a.header("X-ServiceCall-Attempt") for a in arrivals]
    assert {a.header("Idempotency-Key") for a in arrivals} == {call_id}
    call = fetch(json_api, t, call_id)
    assert call["state"] == "SUCCEEDED"
    assert completed.completed.state == api.ServiceCall.SUCCEEDED
    assert call["attempts"][-1]["outcome"] == "SUCCEEDED"

    # Never two terminal states: give a late duplicate time to show up, then count.
    await asyncio.sleep(3)
    topic = Topics.with_prefix(running_mesh.topic_prefix).call_events
    envelopes = map(pb.Envelope.FromString, read_whole_topic(running_mesh.kafka_bootstrap, topic))
    terminal = [
        e
        for e in envelopes
        if e.service_call_id == call_id and e.WhichOneof("payload") == "completed"
    ]
    assert len(terminal) == 1


async def test_a_hand_off_no_executor_took_is_dispatched_again_after_its_lease(
    json_api: JsonClient,
    scripted_sink: ScriptedSink,
    call_events: CallEvents,
    running_mesh: Layout,
) -> None:
    t = tenant()
    path = f"/lease/{uuid.uuid4().hex}"
    kill_executor(running_mesh)
    try:
        call_id = submit(json_api, t, {"url": scripted_sink.url(path)})
        # The hand-off waits in Kafka; once the lease (5 s in the test mesh) has run out
        # without ExecutionStarted, the watchdog sends the same attempt again.
        await eventually(
            lambda: len(execution_requests(running_mesh, call_id)) >= 2, 30, interval=0.5
        )
    finally:
        restart_executor_if_down(running_mesh)
    completed = await call_events.completed(call_id, timeout=60)

    requests = execution_requests(running_mesh, call_id)
    assert {r.attempt for r in requests} == {1}
    assert {r.idempotency_key for r in requests} == {call_id}
    assert completed.completed.state == api.ServiceCall.SUCCEEDED
    arrivals = scripted_sink.matching(path)
    assert arrivals and {a.header("Idempotency-Key") for a in arrivals} == {call_id}
    assert [a["outcome"] for a in fetch(json_api, t, call_id)["attempts"]] == ["SUCCEEDED"]


async def test_an_attempt_whose_executor_died_is_timed_out_and_retried(
    json_api: JsonClient,
    scripted_sink: ScriptedSink,
    call_events: CallEvents,
    running_mesh: Layout,
) -> None:
    t = tenant()
    path = f"/slow-once/10000/{uuid.uuid4().hex}"
    call_id = submit(
        json_api,
        t,
        {"url": scripted_sink.url(path), "attemptTimeout": "2s"},
        retryPolicy={"maxAttempts": 3, "minBackoff": "0.1s", "jitter": 0},
    )
    await scripted_sink.wait_for(lambda _: len(scripted_sink.matching(path)) >= 1, timeout=30)
    # Killed before its ExecutionStarted was published, the call would still be Dispatched and
    # the lease would send attempt 1 again (the test above): wait until it is Running.
    await eventually(lambda: fetch(json_api, t, call_id)["state"] == "RUNNING", 8, interval=0.5)
    kill_executor(running_mesh)
    try:
        # Nobody reports on attempt 1 now. Past its deadline (start + 2 s + the 5 s grace of
        # the test mesh) the watchdog records it as timed out and dispatches attempt 2.
        await eventually(
            lambda: 2 in {r.attempt for r in execution_requests(running_mesh, call_id)},
            30,
            interval=0.5,
        )
    finally:
        restart_executor_if_down(running_mesh)
    completed = await call_events.completed(call_id, timeout=60)

    assert completed.completed.state == api.ServiceCall.SUCCEEDED
    attempts = fetch(json_api, t, call_id)["attempts"]
    assert [a["outcome"] for a in attempts] == ["TIMED_OUT", "SUCCEEDED"]
    assert {a.header("Idempotency-Key") for a in scripted_sink.matching(path)} == {call_id}
