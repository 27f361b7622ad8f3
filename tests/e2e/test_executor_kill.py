"""An executor killed in the middle of a request: the call gets one more attempt with the same
idempotency key, and exactly one terminal state."""

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
from servicecall.internal.v1 import events_pb2 as pb
from servicecall.v1 import service_call_pb2 as api
from tests.e2e.conftest import CallEvents, JsonClient
from tests.e2e.test_executor_paths import ScriptedSink, fetch, read_whole_topic, submit, tenant


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
        # Whatever happened, leave the session's mesh with an executor for the other tests.
        executor_pid = running_mesh.run_dir / "executor.pid"
        if processes.running_pid(executor_pid, str(running_mesh.run_dir)) is None:
            mesh.start_services(running_mesh, only=("executor",))
            mesh.wait_healthy(running_mesh, only=("executor",))

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
