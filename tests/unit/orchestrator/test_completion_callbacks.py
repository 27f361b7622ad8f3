"""Completion callbacks: every terminal path of a call makes its callbacks, once each, as
keyed calls linked to it; the failure callback only on FAILED; a callback never calls back.

Driven as the mesh drives it: the `completed` summaries the parent's last transition put in
the (fake) store's outbox are handed to the callback consumer's handler, which makes the
callbacks through the submit use case."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import TypedDict

import pytest

from mesh.kafka import ReceivedMessage
from orchestrator.domain.callbacks import (
    CallbackKind,
    callback_key,
    callbacks_for,
    outcome_document,
)
from orchestrator.domain.commands import (
    Command,
    FireTimer,
    RecordExecutionFailed,
    RecordExecutionSucceeded,
    TimerPurpose,
)
from orchestrator.domain.idempotency import service_call_id_for
from orchestrator.domain.model import DEFAULT_RETRY_POLICY, ExecutionResult, RetryPolicy
from orchestrator.domain.states import (
    Canceled,
    Dispatched,
    Failed,
    Scheduled,
    ServiceCallState,
    Succeeded,
)
from orchestrator.entrypoints.callbacks import CompletionHandler
from orchestrator.mapping import decode_completion
from orchestrator.ports import Accepted
from orchestrator.service_layer.callbacks import Callbacks
from servicecall.internal.v1 import events_pb2 as pb
from tests.unit.orchestrator.test_replay import World as ReplayWorld

HOOK = "https://hooks.example.test/done"
FAILED_HOOK = "https://hooks.example.test/failed"
RETRYING = RetryPolicy(
    max_attempts=2,
    max_retry_duration=None,
    min_backoff=timedelta(seconds=5),
    max_backoff=timedelta(seconds=5),
    multiplier=1.0,
    jitter=0.0,
    retryable_status_codes=frozenset(),
)


class Urls(TypedDict):
    callback_url: str | None
    failure_callback_url: str | None


class World(ReplayWorld):
    def __init__(self) -> None:
        super().__init__()
        self.callbacks = Callbacks(self.orchestrator)
        self.handler = CompletionHandler(self.callbacks)
        self.delivered = 0

    async def call(
        self,
        *,
        callback_url: str | None = HOOK,
        failure_callback_url: str | None = None,
        due: timedelta | None = None,
        policy: RetryPolicy = RETRYING,
        max_lateness: timedelta | None = None,
    ) -> ServiceCallState:
        submission = replace(
            self.submission(due=due),
            retry_policy=policy,
            callback_url=callback_url,
            failure_callback_url=failure_callback_url,
            max_lateness=max_lateness,
        )
        return await self.submit(submission)

    async def report(self, call: ServiceCallState, attempt: int, status: int) -> ServiceCallState:
        if isinstance(call, Dispatched):  # the executor sends at the due time, not before
            self.clock.current = max(self.clock.now(), call.due_at)
        now = self.clock.now()
        result = ExecutionResult(status, f"answer {status}", "", status >= 500, None, now, now)
        command = (
            RecordExecutionSucceeded(attempt=attempt, result=result)
            if status < 300
            else RecordExecutionFailed(attempt=attempt, result=result)
        )
        return await self._apply(call, command, f"report/{attempt}")

    async def fire(self, call: ServiceCallState, purpose: TimerPurpose) -> ServiceCallState:
        match call:
            case Scheduled(handoff_at=fire_at) if fire_at is not None:
                pass
            case Dispatched(lease_expires_at=fire_at):
                pass
            case _:
                raise AssertionError(f"no timer armed: {call!r}")
        self.clock.current = max(self.clock.now(), fire_at)
        command = FireTimer(purpose=purpose, attempt=call.attempt, fire_at=fire_at)
        return await self._apply(call, command, f"timer/{fire_at.isoformat()}")

    async def _apply(
        self, call: ServiceCallState, command: Command, event_id: str
    ) -> ServiceCallState:
        spec = call.spec
        transition = await self.orchestrator.apply(
            spec.tenant_id,
            spec.service_call_id,
            command,
            f"{spec.service_call_id}/{event_id}",
            "test",
        )
        assert transition is not None and transition.rejection is None, transition
        state = await self.store.get(spec.tenant_id, spec.service_call_id)
        assert state is not None
        return state

    async def deliver_completions(self) -> int:
        """Hands every message published since the last delivery to the callback consumer's
        handler, as the broker would (the other payloads included: the handler skips them)."""
        count = 0
        while self.delivered < len(self.store.outbox):
            message = self.store.outbox[self.delivered]
            self.delivered += 1
            count += pb.Envelope.FromString(message.value).WhichOneof("payload") == "completed"
            await self.handler(
                ReceivedMessage(message.topic, 0, self.delivered, message.key, message.value)
            )
        return count

    async def callbacks_of(self, parent: ServiceCallState) -> dict[CallbackKind, ServiceCallState]:
        found: dict[CallbackKind, ServiceCallState] = {}
        for kind in CallbackKind:
            key = callback_key(kind, parent.spec.service_call_id)
            state = await self.store.get(self.tenant_id, service_call_id_for(self.tenant_id, key))
            if state is not None:
                found[kind] = state
        return found


async def _succeeded(
    world: World, callback_url: str | None = HOOK, failure_callback_url: str | None = None
) -> ServiceCallState:
    fields = Urls(callback_url=callback_url, failure_callback_url=failure_callback_url)
    return await world.report(await world.call(**fields), 1, 200)


async def _failed_after_retries(
    world: World, callback_url: str | None = HOOK, failure_callback_url: str | None = None
) -> ServiceCallState:
    fields = Urls(callback_url=callback_url, failure_callback_url=failure_callback_url)
    first = await world.report(await world.call(**fields), 1, 503)
    assert isinstance(first, Scheduled) and first.attempt == 2
    again = await world.fire(first, TimerPurpose.HANDOFF)
    return await world.report(again, 2, 503)


async def _failed_not_retryable(
    world: World, callback_url: str | None = HOOK, failure_callback_url: str | None = None
) -> ServiceCallState:
    fields = Urls(callback_url=callback_url, failure_callback_url=failure_callback_url)
    return await world.report(await world.call(**fields), 1, 400)


async def _canceled(
    world: World, callback_url: str | None = HOOK, failure_callback_url: str | None = None
) -> ServiceCallState:
    fields = Urls(callback_url=callback_url, failure_callback_url=failure_callback_url)
    call = await world.call(due=timedelta(hours=1), **fields)
    outcome = await world.orchestrator.cancel(
        world.tenant_id, call.spec.service_call_id, "not needed", "test"
    )
    assert isinstance(outcome, Canceled)
    return outcome


async def _too_late(
    world: World, callback_url: str | None = HOOK, failure_callback_url: str | None = None
) -> ServiceCallState:
    fields = Urls(callback_url=callback_url, failure_callback_url=failure_callback_url)
    call = await world.call(due=timedelta(hours=1), max_lateness=timedelta(minutes=1), **fields)
    world.clock.advance(timedelta(hours=3))  # the mesh was down
    return await world.fire(call, TimerPurpose.HANDOFF)


async def _abandoned(
    world: World, callback_url: str | None = HOOK, failure_callback_url: str | None = None
) -> ServiceCallState:
    fields = Urls(callback_url=callback_url, failure_callback_url=failure_callback_url)
    call = await world.call(**fields)
    spec = call.spec
    transition = await world.orchestrator.abandon(
        spec.tenant_id, spec.service_call_id, "parked #7", "parked/x/0/1"
    )
    assert transition is not None and isinstance(transition.state, Failed)
    return transition.state


ENDINGS = {
    "succeeded": (_succeeded, Succeeded),
    "failed_after_retries": (_failed_after_retries, Failed),
    "failed_not_retryable": (_failed_not_retryable, Failed),
    "canceled": (_canceled, Canceled),
    "too_late": (_too_late, Failed),
    "abandoned": (_abandoned, Failed),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_every_ending_makes_the_completion_callback(ending: str) -> None:
    world = World()
    finish, expected = ENDINGS[ending]
    parent = await finish(world)
    assert isinstance(parent, expected)
    assert await world.callbacks_of(parent) == {}  # not before the summary is consumed

    assert await world.deliver_completions() == 1

    callbacks = await world.callbacks_of(parent)
    assert set(callbacks) == {CallbackKind.COMPLETION}
    callback = callbacks[CallbackKind.COMPLETION]
    spec = callback.spec
    assert isinstance(callback, Dispatched)  # due now: handed to the executor at once
    assert spec.callback_of == parent.spec.service_call_id
    assert spec.callback_url is None and spec.failure_callback_url is None
    assert spec.request.method == "POST" and spec.request.url == HOOK
    assert ("content-type", "application/json") in spec.request.headers
    assert spec.retry_policy == DEFAULT_RETRY_POLICY
    assert spec.tags == parent.spec.tags
    assert isinstance(parent, Succeeded | Failed | Canceled)
    assert spec.request.body == outcome_document(parent)
    body = json.loads(spec.request.body)
    assert body["service_call"] == (
        f"tenants/{world.tenant_id}/service-calls/{parent.spec.service_call_id}"
    )
    assert body["state"] == expected.__name__.upper()
    assert body["attempt_count"] == len(parent.attempts)
    assert body["tags"] == sorted(parent.spec.tags)
    if isinstance(parent, Failed | Canceled):
        assert body["status_reason"] == parent.reason
        assert body["status_reason"]
    if parent.attempts:
        last = parent.attempts[-1]
        assert (body["response_status"], body["response_snippet"]) == (
            last.response_status,
            last.response_snippet,
        )
    else:
        assert (body["response_status"], body["response_snippet"], body["error"]) == (0, "", "")


async def test_the_outcome_document_has_exactly_the_documented_fields() -> None:
    world = World()
    parent = await _failed_after_retries(world)
    assert isinstance(parent, Failed)
    body = json.loads(outcome_document(parent))
    assert body == {
        "service_call": f"tenants/{world.tenant_id}/service-calls/{parent.spec.service_call_id}",
        "state": "FAILED",
        "status_reason": parent.reason,
        "attempt_count": 2,
        "complete_time": parent.completed_at.isoformat().replace("+00:00", "Z"),
        "tags": ["nightly", "orders"],
        "response_status": 503,
        "response_snippet": "answer 503",
        "error": "",
    }


@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_the_failure_callback_is_made_only_when_the_call_fails(ending: str) -> None:
    world = World()
    finish, expected = ENDINGS[ending]
    parent = await finish(world, callback_url=None, failure_callback_url=FAILED_HOOK)
    await world.deliver_completions()

    callbacks = await world.callbacks_of(parent)
    if expected is Failed:
        assert set(callbacks) == {CallbackKind.FAILURE}
        failure = callbacks[CallbackKind.FAILURE]
        assert failure.spec.request.url == FAILED_HOOK
        assert failure.spec.callback_of == parent.spec.service_call_id
        assert json.loads(failure.spec.request.body)["state"] == "FAILED"
    else:
        assert callbacks == {}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_with_both_set_a_failure_makes_both_and_other_endings_one(ending: str) -> None:
    world = World()
    finish, expected = ENDINGS[ending]
    parent = await finish(world, callback_url=HOOK, failure_callback_url=FAILED_HOOK)
    await world.deliver_completions()

    callbacks = await world.callbacks_of(parent)
    wanted = {CallbackKind.COMPLETION}
    if expected is Failed:
        wanted.add(CallbackKind.FAILURE)
    assert set(callbacks) == wanted
    assert {c.spec.request.url for c in callbacks.values()} == (
        {HOOK, FAILED_HOOK} if expected is Failed else {HOOK}
    )
    # Each is its own call, with its own id.
    assert len({c.spec.service_call_id for c in callbacks.values()}) == len(wanted)


async def test_a_call_without_callbacks_makes_none() -> None:
    world = World()
    parent = await _failed_not_retryable(world, callback_url=None)
    before = len(world.store.outbox)
    assert await world.deliver_completions() == 1
    assert await world.callbacks_of(parent) == {}
    assert len(world.store.outbox) == before  # nothing submitted


@pytest.mark.parametrize("status", [200, 400])
async def test_a_callback_s_own_ending_never_makes_a_callback(status: int) -> None:
    world = World()
    parent = await _failed_not_retryable(world, callback_url=HOOK, failure_callback_url=HOOK)
    await world.deliver_completions()
    callbacks = await world.callbacks_of(parent)
    assert len(callbacks) == 2
    for callback in callbacks.values():
        ended = await world.report(callback, 1, status)
        assert isinstance(ended, Succeeded | Failed)
        assert callbacks_for(ended) == ()
    calls_before = len(world.store.calls)

    # The callbacks' own summaries are consumed like any: they make nothing.
    assert await world.deliver_completions() == 2
    assert len(world.store.calls) == calls_before


async def test_a_callback_made_twice_is_made_once() -> None:
    world = World()
    parent = await _failed_not_retryable(world, failure_callback_url=FAILED_HOOK)
    # The summary delivered twice (at least once), and the use case run again by hand (a
    # second replica, a replayed parked message).
    assert await world.deliver_completions() == 1
    first = await world.callbacks_of(parent)
    world.delivered = 0
    world.clock.advance(timedelta(minutes=5))
    await world.deliver_completions()
    again = await world.callbacks.call_back(world.tenant_id, parent.spec.service_call_id, "test")
    assert [(o.created, o.refused) for o in again] == [(False, None), (False, None)]
    assert await world.callbacks_of(parent) == first
    assert len(first) == 2


def test_callback_ids_are_deterministic_and_distinct_per_kind_and_parent() -> None:
    parent = "0b6f1c2e-4d5a-4e7b-9c1d-2f3a4b5c6d7e"
    assert callback_key(CallbackKind.COMPLETION, parent) == f"callback:{parent}"
    assert callback_key(CallbackKind.FAILURE, parent) == f"failure-callback:{parent}"
    ids = {
        service_call_id_for(tenant, callback_key(kind, p))
        for tenant in ("acme", "globex")
        for kind in CallbackKind
        for p in (parent, "other")
    }
    assert len(ids) == 8
    assert service_call_id_for("acme", callback_key(CallbackKind.COMPLETION, parent)) == (
        service_call_id_for("acme", f"callback:{parent}")
    )


async def test_a_key_the_tenant_took_for_its_own_call_refuses_the_callback_not_the_consumer() -> (
    None
):
    world = World()
    parent = await world.call(due=timedelta(hours=1))
    squatter = world.submission(
        key=callback_key(CallbackKind.COMPLETION, parent.spec.service_call_id)
    )
    assert isinstance(await world.orchestrator.submit(squatter, "test"), Accepted)
    await world.orchestrator.cancel(world.tenant_id, parent.spec.service_call_id, "", "test")

    outcomes = await world.callbacks.call_back(world.tenant_id, parent.spec.service_call_id, "test")

    [outcome] = outcomes
    assert outcome.service_call_id is None and outcome.refused
    assert "already used" in outcome.refused


async def test_an_unfinished_or_unknown_call_makes_no_callback() -> None:
    world = World()
    running = await world.call()
    assert await world.callbacks.call_back(world.tenant_id, running.spec.service_call_id, "t") == []
    assert await world.callbacks.call_back(world.tenant_id, "nope", "t") == []


@pytest.mark.parametrize(
    ("urls", "ending", "asks"),
    [
        ({"callback_url": None, "failure_callback_url": None}, "succeeded", False),
        ({"callback_url": HOOK, "failure_callback_url": None}, "succeeded", True),
        ({"callback_url": None, "failure_callback_url": FAILED_HOOK}, "succeeded", False),
        ({"callback_url": None, "failure_callback_url": FAILED_HOOK}, "failed", True),
    ],
)
async def test_the_summary_says_whether_the_call_asks_for_callbacks(
    urls: Urls, ending: str, asks: bool
) -> None:
    # The callback consumer reads the call only for summaries that ask: a call without
    # callbacks costs it no store read.
    world = World()
    make = _succeeded if ending == "succeeded" else _failed_not_retryable
    parent = await make(world, **urls)
    (summary,) = [
        message
        for message in world.store.outbox
        if pb.Envelope.FromString(message.value).WhichOneof("payload") == "completed"
    ]
    assert pb.Envelope.FromString(summary.value).completed.asks_callbacks is asks
    decoded = decode_completion(ReceivedMessage(summary.topic, 0, 1, summary.key, summary.value))
    assert (decoded is not None) is asks
    if decoded is not None:
        assert decoded.service_call_id == parent.spec.service_call_id
