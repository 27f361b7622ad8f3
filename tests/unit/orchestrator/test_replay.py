"""ReplayServiceCall: a new call from a terminal one, linked to it, through the submit path
(the use case over the in-memory store, and the gRPC entry point with a fake context)."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from mesh.clock import Uuid7Gen
from mesh.secrets import SecretBox, header_binding
from orchestrator.domain.commands import RecordExecutionFailed, RecordExecutionSucceeded
from orchestrator.domain.errors import (
    IdempotencyConflict,
    NotReplayable,
    ServiceCallNotFound,
)
from orchestrator.domain.idempotency import fingerprint
from orchestrator.domain.model import (
    DEFAULT_RETRY_POLICY,
    SEALED_PREFIX,
    ExecutionResult,
    HttpRequest,
    RetryPolicy,
    ServiceCallSpec,
)
from orchestrator.domain.states import (
    Canceled,
    Dispatched,
    Failed,
    Scheduled,
    ServiceCallState,
    Succeeded,
)
from orchestrator.entrypoints.grpc_api import ServiceCallApi
from orchestrator.entrypoints.page_tokens import PageTokens
from orchestrator.mapping import replay_from_proto, service_call_to_proto
from orchestrator.ports import Accepted, Invalid, Replay, Submission
from orchestrator.service_layer.auth import Authenticator
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from tests.builders import FINGERPRINT_KEY, new_tenant
from tests.fakes.clock import FakeClock
from tests.fakes.store import InMemoryServiceCallStore
from tests.services import orchestrator_over
from tests.unit.orchestrator.test_batch_submit_answers import AbortedError, Context, Keys

BOX = SecretBox({1: bytes(32)}, current=1)  # the key tests/services.py wires
POLICY = RetryPolicy(
    max_attempts=2,
    max_retry_duration=None,
    min_backoff=timedelta(seconds=3),
    max_backoff=timedelta(seconds=30),
    multiplier=3.0,
    jitter=0.0,
    retryable_status_codes=frozenset({409}),
)


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = InMemoryServiceCallStore()
        self.orchestrator = orchestrator_over(self.store, self.clock)
        self.tenant_id = new_tenant()

    def submission(self, key: str | None = None, due: timedelta | None = None) -> Submission:
        return Submission(
            tenant_id=self.tenant_id,
            request=HttpRequest(
                "PUT",
                "https://example.test/orders/7",
                (("authorization", "Bearer s3cret"), ("x-trace", "a")),
                b'{"n": 7}',
                timedelta(seconds=10),
            ),
            tags=frozenset({"orders", "nightly"}),
            idempotency_key=key,
            retry_policy=POLICY,
            due=due,
        )

    async def submit(self, submission: Submission | None = None) -> ServiceCallState:
        outcome = await self.orchestrator.submit(submission or self.submission(), "test")
        assert isinstance(outcome, Accepted), outcome
        return outcome.state

    async def finish(self, call: ServiceCallState, status: int) -> ServiceCallState:
        now = self.clock.now()
        result = ExecutionResult(status, "", "", False, None, now, now)
        command = (
            RecordExecutionSucceeded(attempt=1, result=result)
            if status < 300
            else RecordExecutionFailed(attempt=1, result=result)
        )
        spec = call.spec
        await self.orchestrator.apply(
            spec.tenant_id, spec.service_call_id, command, f"{spec.service_call_id}/1", "test"
        )
        state = await self.store.get(spec.tenant_id, spec.service_call_id)
        assert state is not None
        return state

    async def failed(self) -> ServiceCallState:
        state = await self.finish(await self.submit(), 400)  # 400: not retryable
        assert isinstance(state, Failed)
        return state

    def submission_spec(self) -> ServiceCallSpec:
        return ServiceCallSpec(
            tenant_id=self.tenant_id,
            service_call_id="01890a5d-ac96-774b-bcce-b302099a8057",
            request=self.submission().request,
            tags=frozenset(),
            idempotency_key=None,
            retry_policy=POLICY,
            fingerprint="f",
            created_at=self.clock.now(),
        )

    def replay(
        self,
        call: ServiceCallState,
        key: str | None = None,
        due: datetime | timedelta | None = None,
    ) -> Replay:
        return Replay(self.tenant_id, call.spec.service_call_id, key, due)

    async def replayed(self, replay: Replay) -> Accepted:
        outcome = await self.orchestrator.replay(replay, "test")
        assert isinstance(outcome, Accepted), outcome
        return outcome


def opened(request: HttpRequest, tenant_id: str, service_call_id: str, name: str) -> str:
    [value] = [v for n, v in request.headers if n == name]
    assert value.startswith(SEALED_PREFIX)
    raw = base64.b64decode(value[len(SEALED_PREFIX) :])
    return BOX.open(raw, header_binding(tenant_id, service_call_id, name)).decode()


@pytest.mark.parametrize("ending", ["SUCCEEDED", "FAILED", "CANCELED"])
async def test_a_terminal_call_is_replayed_as_a_new_linked_call(ending: str) -> None:
    world = World()
    # A call due now is handed to the executor at once; one due later can still be canceled.
    call = await world.submit(
        world.submission(due=timedelta(hours=1) if ending == "CANCELED" else None)
    )
    original_id = call.spec.service_call_id
    if ending == "CANCELED":
        canceled = await world.orchestrator.cancel(world.tenant_id, original_id, "no", "test")
        assert isinstance(canceled, Canceled)
        original: ServiceCallState = canceled
    else:
        original = await world.finish(call, 200 if ending == "SUCCEEDED" else 400)
        assert isinstance(original, Succeeded if ending == "SUCCEEDED" else Failed)
    world.clock.advance(timedelta(minutes=5))

    outcome = await world.replayed(world.replay(original))

    assert outcome.created
    new = outcome.state
    assert isinstance(new, Dispatched)  # due now, as a submit without a due time
    spec = new.spec
    assert spec.service_call_id != original_id
    assert spec.replay_of == original_id
    assert spec.tenant_id == world.tenant_id
    assert new.due_at == world.clock.now()  # no due time: now
    assert new.attempt == 1 and new.attempts == ()
    assert spec.created_at == world.clock.now()
    assert spec.tags == original.spec.tags
    assert spec.retry_policy == POLICY
    assert spec.idempotency_key is None
    # The same request; its secret header sealed anew, for the new call only.
    old_request, new_request = original.spec.request, spec.request
    assert (new_request.method, new_request.url, new_request.body) == (
        old_request.method,
        old_request.url,
        old_request.body,
    )
    assert new_request.attempt_timeout == old_request.attempt_timeout
    assert ("x-trace", "a") in new_request.headers
    assert opened(new_request, world.tenant_id, spec.service_call_id, "authorization") == (
        "Bearer s3cret"
    )
    with pytest.raises(ValueError):
        opened(new_request, world.tenant_id, original_id, "authorization")
    # The original is left as it was.
    assert await world.store.get(world.tenant_id, original_id) == original


@pytest.mark.parametrize("delay", [None, timedelta(minutes=10)])
async def test_a_replay_may_name_its_own_due_time(delay: timedelta | None) -> None:
    world = World()
    failed = await world.failed()
    at = world.clock.now() + timedelta(hours=2)
    due: datetime | timedelta = delay if delay is not None else at
    new = (await world.replayed(world.replay(failed, due=due))).state
    assert isinstance(new, Scheduled)
    assert new.due_at == (world.clock.now() + delay if delay is not None else at)


async def test_a_call_not_yet_finished_is_refused_with_a_clear_reason() -> None:
    world = World()
    scheduled = await world.submit(world.submission(due=timedelta(hours=1)))
    outcome = await world.orchestrator.replay(world.replay(scheduled), "test")
    assert isinstance(outcome, NotReplayable)
    assert outcome.message == (
        "service call is SCHEDULED: only a SUCCEEDED, FAILED or CANCELED call can be replayed"
    )
    assert len(world.store.calls) == 1  # nothing was made


async def test_the_same_replay_with_the_same_key_returns_the_same_call() -> None:
    world = World()
    failed = await world.failed()
    first = await world.replayed(world.replay(failed, key="replay-1"))
    world.clock.advance(timedelta(seconds=30))  # a retry later: still the same replay
    again = await world.replayed(world.replay(failed, key="replay-1"))
    assert first.created and not again.created
    assert again.state.spec.service_call_id == first.state.spec.service_call_id
    assert again.state.spec.idempotency_key == "replay-1"


async def test_without_a_key_every_replay_makes_a_new_call() -> None:
    world = World()
    failed = await world.failed()
    one = await world.replayed(world.replay(failed))
    two = await world.replayed(world.replay(failed))
    assert one.created and two.created
    assert one.state.spec.service_call_id != two.state.spec.service_call_id
    assert one.state.spec.replay_of == two.state.spec.replay_of == failed.spec.service_call_id


async def test_one_key_for_a_replay_and_anything_else_is_a_conflict() -> None:
    world = World()
    failed = await world.failed()
    other = await world.failed()
    await world.replayed(world.replay(failed, key="k"))
    # The same key for another call's replay, another due time, or a submit of the very
    # request the replay sent: never silently the first replay's call.
    for outcome in [
        await world.orchestrator.replay(world.replay(other, key="k"), "test"),
        await world.orchestrator.replay(
            world.replay(failed, key="k", due=timedelta(minutes=1)), "test"
        ),
        await world.orchestrator.submit(world.submission(key="k"), "test"),
    ]:
        assert isinstance(outcome, IdempotencyConflict), outcome


async def test_a_key_used_by_a_submit_is_a_conflict_for_a_replay() -> None:
    world = World()
    failed = await world.failed()
    await world.submit(world.submission(key="k"))
    outcome = await world.orchestrator.replay(world.replay(failed, key="k"), "test")
    assert isinstance(outcome, IdempotencyConflict)


async def test_another_tenant_s_call_is_not_found() -> None:
    world = World()
    failed = await world.failed()
    stranger = Replay(new_tenant(), failed.spec.service_call_id, None, None)
    outcome = await world.orchestrator.replay(stranger, "test")
    assert isinstance(outcome, ServiceCallNotFound)


async def test_a_replay_is_validated_as_a_submit_is() -> None:
    world = World()
    failed = await world.failed()
    outcome = await world.orchestrator.replay(world.replay(failed, due=timedelta(days=-1)), "test")
    assert isinstance(outcome, Invalid)


async def test_a_replay_of_a_replay_links_to_the_call_it_replays() -> None:
    world = World()
    failed = await world.failed()
    first = (await world.replayed(world.replay(failed))).state
    first = await world.finish(first, 400)
    second = (await world.replayed(world.replay(first))).state
    assert second.spec.replay_of == first.spec.service_call_id


def test_the_link_is_in_the_fingerprint_and_a_submit_s_is_unchanged() -> None:
    request = HttpRequest("POST", "https://example.test/", (), b"", timedelta(seconds=1))
    due = datetime(2026, 1, 1, tzinfo=UTC)

    def of(replay_of: str | None = None, when: datetime | None = due) -> str:
        return fingerprint(
            request, (), DEFAULT_RETRY_POLICY, when, key=FINGERPRINT_KEY, replay_of=replay_of
        )

    submitted = fingerprint(request, (), DEFAULT_RETRY_POLICY, due, key=FINGERPRINT_KEY)
    assert of() == submitted
    assert len({submitted, of("a"), of("b"), of("a", None)}) == 4


def test_the_link_is_shown_as_the_original_s_resource_name() -> None:
    world = World()
    state = Scheduled(
        spec=replace(world.submission_spec(), replay_of="0b6f1c2e-4d5a-4e7b-9c1d-2f3a4b5c6d7e"),
        version=1,
        attempts=(),
        due_at=world.clock.now(),
        attempt=1,
        handoff_at=None,
    )
    for view in (svc.BASIC, svc.FULL):
        shown = service_call_to_proto(state, view)
        assert shown.replay_of == (
            f"tenants/{world.tenant_id}/service-calls/0b6f1c2e-4d5a-4e7b-9c1d-2f3a4b5c6d7e"
        )
    plain = Scheduled(
        spec=world.submission_spec(),
        version=1,
        attempts=(),
        due_at=world.clock.now(),
        attempt=1,
        handoff_at=None,
    )
    assert service_call_to_proto(plain).replay_of == ""


def test_the_replay_request_reads_its_key_and_due_time() -> None:
    request = svc.ReplayServiceCallRequest(tenant_id="acme", service_call_id="x")
    assert replay_from_proto(request, None) == Replay("acme", "x", None, None)
    assert replay_from_proto(request, "h") == Replay("acme", "x", "h", None)
    request.idempotency_key = "k"
    request.delay.FromSeconds(30)
    assert replay_from_proto(request, None) == Replay("acme", "x", "k", timedelta(seconds=30))
    assert replay_from_proto(request, "other") != Replay("acme", "x", "k", timedelta(seconds=30))
    request.schedule_time.FromSeconds(0)
    problems = replay_from_proto(request, None)
    assert isinstance(problems, list) and [p.field for p in problems] == ["delay"]


# -- the gRPC entry point ---------------------------------------------------------------


def api_of(world: World) -> ServiceCallApi:
    return ServiceCallApi(
        world.orchestrator, Uuid7Gen(), PageTokens(b"s"), Authenticator(Keys(world.tenant_id))
    )


async def test_the_rpc_replays_and_answers_201_then_200_for_the_same_key() -> None:
    world = World()
    failed = await world.failed()
    request = svc.ReplayServiceCallRequest(
        tenant_id=world.tenant_id, service_call_id=failed.spec.service_call_id
    )
    context = Context(headers={"idempotency-key": "again"})
    first = await api_of(world).ReplayServiceCall(request, context)  # type: ignore[arg-type]
    again = await api_of(world).ReplayServiceCall(request, context)  # type: ignore[arg-type]
    assert first.service_call_id == again.service_call_id != failed.spec.service_call_id
    assert (
        first.replay_of == f"tenants/{world.tenant_id}/service-calls/{failed.spec.service_call_id}"
    )
    assert first.state == api.ServiceCall.DISPATCHED
    assert first.idempotency_key == "again"


async def test_the_rpc_refuses_a_running_call_and_hides_another_tenant_s() -> None:
    world = World()
    scheduled = await world.submit(world.submission(due=timedelta(hours=1)))
    request = svc.ReplayServiceCallRequest(
        tenant_id=world.tenant_id, service_call_id=scheduled.spec.service_call_id
    )
    with pytest.raises(AbortedError) as refused:
        await api_of(world).ReplayServiceCall(request, Context())  # type: ignore[arg-type]
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "only a SUCCEEDED, FAILED or CANCELED call can be replayed" in str(refused.value)

    # A key of another tenant, naming this tenant's call: NOT_FOUND, as GetServiceCall.
    failed = await world.failed()
    stranger = World()
    stranger.store, stranger.orchestrator = world.store, world.orchestrator
    for tenant_id in (world.tenant_id, stranger.tenant_id):
        request = svc.ReplayServiceCallRequest(
            tenant_id=tenant_id, service_call_id=failed.spec.service_call_id
        )
        with pytest.raises(AbortedError) as hidden:
            await api_of(stranger).ReplayServiceCall(request, Context())  # type: ignore[arg-type]
        assert hidden.value.code == grpc.StatusCode.NOT_FOUND
    assert len(world.store.calls) == 2  # the scheduled call and the failed one: no replay
