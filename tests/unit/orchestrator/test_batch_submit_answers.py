"""BatchSubmitServiceCalls: each item gets the answer a lone SubmitServiceCall would give it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from mesh.clock import Uuid7Gen
from orchestrator.domain.api_keys import hash_secret, new_api_key
from orchestrator.domain.idempotency import service_call_id_for
from orchestrator.entrypoints.grpc_api import MAX_BATCH_ITEMS, ServiceCallApi
from orchestrator.entrypoints.page_tokens import PageTokens
from orchestrator.ports import Step, StoredKey, Transition
from orchestrator.service_layer.auth import Authenticator
from servicecall.v1 import service_call_pb2 as api
from servicecall.v1 import service_call_service_pb2 as svc
from tests.builders import new_tenant
from tests.fakes.clock import FakeClock
from tests.fakes.store import InMemoryServiceCallStore
from tests.services import orchestrator_over

KEY = new_api_key(bytes(8), bytes(32))
Item = svc.BatchSubmitServiceCallsRequest.Item


@dataclass
class Keys:
    tenant_id: str

    async def find(self, key_id: str) -> StoredKey | None:
        return StoredKey(key_id, self.tenant_id, hash_secret(KEY.secret), revoked=False)


class AbortedError(Exception):
    def __init__(self, code: Any, details: str, status: status_pb2.Status | None = None) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.status = status


@dataclass
class Context:
    headers: dict[str, str] = field(default_factory=dict)

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {KEY.text}"), *self.headers.items()]

    async def abort(self, code: Any, details: str) -> None:
        raise AbortedError(code, details)

    async def abort_with_status(self, status: Any) -> None:
        [(_, raw)] = [m for m in status.trailing_metadata if m[0] == "grpc-status-details-bin"]
        raise AbortedError(status.code, status.details, status_pb2.Status.FromString(raw))

    async def send_initial_metadata(self, metadata: Any) -> None:
        pass


@dataclass
class FailingStore(InMemoryServiceCallStore):
    """Raises `error` for the calls in `failing`, as a broken connection or a bug would."""

    failing: dict[str, Exception] = field(default_factory=dict)

    async def transact(
        self,
        tenant_id: str,
        service_call_id: str,
        step: Step,
        event_id: str | None = None,
        *,
        new_call: bool = False,
    ) -> Transition | None:
        if service_call_id in self.failing:
            raise self.failing[service_call_id]
        return await super().transact(tenant_id, service_call_id, step, event_id, new_call=new_call)


@dataclass
class FirstArrivalLagsStore(InMemoryServiceCallStore):
    """The first submit of each call yields to the loop a while before it writes: two
    concurrent submits of one call would then be written in the opposite order."""

    seen: set[str] = field(default_factory=set)

    async def transact(
        self,
        tenant_id: str,
        service_call_id: str,
        step: Step,
        event_id: str | None = None,
        *,
        new_call: bool = False,
    ) -> Transition | None:
        if service_call_id not in self.seen:
            self.seen.add(service_call_id)
            for _ in range(20):
                await asyncio.sleep(0)
        return await super().transact(tenant_id, service_call_id, step, event_id, new_call=new_call)


def service(tenant: str, store: InMemoryServiceCallStore) -> ServiceCallApi:
    orchestrator = orchestrator_over(store, FakeClock())
    return ServiceCallApi(orchestrator, Uuid7Gen(), PageTokens(b"s"), Authenticator(Keys(tenant)))


def item(
    url: str = "https://example.test/hook", key: str = "", body: bytes = b"", delay_s: int = 3600
) -> Item:
    call = api.ServiceCall(
        request=api.HttpRequest(url=url, body=body), idempotency_key=key, tags=["batch"]
    )
    result = Item(service_call=call)
    result.delay.FromSeconds(delay_s)
    return result


async def batch(
    tenant: str,
    store: InMemoryServiceCallStore,
    items: list[Item],
    context: Context | None = None,
) -> list[svc.BatchSubmitServiceCallsResponse.Result]:
    response = await service(tenant, store).BatchSubmitServiceCalls(
        svc.BatchSubmitServiceCallsRequest(tenant_id=tenant, items=items),
        context or Context(),  # type: ignore[arg-type]
    )
    return list(response.results)


def field_violations(status: status_pb2.Status) -> dict[str, str]:
    [detail] = status.details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    return {v.field: v.description for v in bad.field_violations}


async def test_each_item_gets_its_own_answer_in_request_order() -> None:
    tenant, store = new_tenant(), InMemoryServiceCallStore()
    results = await batch(
        tenant,
        store,
        [
            item(key="a", body=b"secret"),
            item(url="ftp://example.test/"),  # refused by validation
            item(key="a", body=b"secret"),  # same key, same request
            item(key="a", url="https://example.test/other"),  # same key, different request
            item(),
            item(delay_s=-5),  # refused by the conversion from protobuf
        ],
    )

    assert [r.WhichOneof("outcome") for r in results] == [
        "service_call",
        "error",
        "service_call",
        "error",
        "service_call",
        "error",
    ]
    assert [r.created for r in results] == [True, False, False, False, True, False]
    first, invalid, again, conflict, plain, negative = results
    assert first.service_call.service_call_id == service_call_id_for(tenant, "a")
    assert again.service_call.service_call_id == first.service_call.service_call_id
    assert plain.service_call.service_call_id != first.service_call.service_call_id
    assert invalid.error.code == code_pb2.INVALID_ARGUMENT
    violations = field_violations(invalid.error)
    assert list(violations) == ["items[1].service_call.request.url"], violations
    assert "items[1].service_call.request.url" in invalid.error.message
    assert negative.error.code == code_pb2.INVALID_ARGUMENT
    assert field_violations(negative.error) == {"items[5].delay": "must not be negative"}
    assert conflict.error.code == code_pb2.ALREADY_EXISTS
    assert "different request" in conflict.error.message
    # The BASIC view: no request body in the answer, though it is stored.
    assert first.service_call.request.body == b""
    stored = {call_id: state for (_, call_id), state in store.calls.items()}
    assert set(stored) == {first.service_call.service_call_id, plain.service_call.service_call_id}
    assert stored[first.service_call.service_call_id].spec.request.body == b"secret"


async def test_items_sharing_a_key_answer_in_request_order_even_when_their_writes_race() -> None:
    tenant, store = new_tenant(), FirstArrivalLagsStore()
    results = await batch(
        tenant,
        store,
        [
            item(key="k"),
            item(key="k", url="https://example.test/other"),
            item(key="k"),
            item(key="other"),
        ],
    )

    assert [(r.WhichOneof("outcome"), r.created) for r in results] == [
        ("service_call", True),
        ("error", False),
        ("service_call", False),
        ("service_call", True),
    ]
    assert results[1].error.code == code_pb2.ALREADY_EXISTS
    [stored] = [s for (_, i), s in store.calls.items() if i == service_call_id_for(tenant, "k")]
    assert stored.spec.request.url == "https://example.test/hook"


async def test_an_item_whose_submit_raises_fails_alone() -> None:
    tenant = new_tenant()
    down, bug = service_call_id_for(tenant, "down"), service_call_id_for(tenant, "bug")
    store = FailingStore(
        failing={down: psycopg.OperationalError("connection lost"), bug: RuntimeError("bug")}
    )
    results = await batch(
        tenant, store, [item(key="down"), item(key="fine"), item(key="bug"), item()]
    )

    codes = [r.error.code if r.HasField("error") else None for r in results]
    assert codes == [code_pb2.UNAVAILABLE, None, code_pb2.INTERNAL, None]
    assert "bug" not in results[2].error.message  # no internals in the answer
    assert [r.created for r in results] == [False, True, False, True]
    assert len(store.calls) == 2


async def test_the_idempotency_key_header_does_not_apply_to_a_batch() -> None:
    tenant, store = new_tenant(), InMemoryServiceCallStore()
    results = await batch(
        tenant, store, [item(), item()], Context(headers={"idempotency-key": "one"})
    )
    assert [r.created for r in results] == [True, True]
    assert {r.service_call.idempotency_key for r in results} == {""}
    assert len(store.calls) == 2


@pytest.mark.parametrize(
    ("size", "message"), [(0, "at least one"), (MAX_BATCH_ITEMS + 1, f"at most {MAX_BATCH_ITEMS}")]
)
async def test_an_empty_or_oversized_batch_is_refused_whole(size: int, message: str) -> None:
    tenant, store = new_tenant(), InMemoryServiceCallStore()
    with pytest.raises(AbortedError) as refused:
        await batch(tenant, store, [item() for _ in range(size)])
    assert refused.value.status is not None
    assert refused.value.status.code == code_pb2.INVALID_ARGUMENT
    assert message in field_violations(refused.value.status)["items"]
    assert store.calls == {}


async def test_a_full_batch_is_accepted() -> None:
    tenant, store = new_tenant(), InMemoryServiceCallStore()
    results = await batch(tenant, store, [item() for _ in range(MAX_BATCH_ITEMS)])
    assert all(r.created for r in results)
    assert len(store.calls) == MAX_BATCH_ITEMS
