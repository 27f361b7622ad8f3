"""ListServiceCalls asks the store for whole states only for the FULL view (issue #12, 8)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from mesh.clock import Uuid7Gen
from orchestrator.domain.api_keys import hash_secret, new_api_key
from orchestrator.entrypoints.grpc_api import ServiceCallApi
from orchestrator.entrypoints.page_tokens import PageTokens
from orchestrator.ports import ListQuery, Page, StoredKey
from orchestrator.service_layer.auth import Authenticator
from servicecall.v1 import service_call_service_pb2 as svc
from tests.builders import T0, new_tenant, spec, submit_step
from tests.fakes.clock import FakeClock
from tests.fakes.store import InMemoryServiceCallStore
from tests.services import orchestrator_over

KEY = new_api_key(bytes(8), bytes(32))
BODY = b"x" * 1024 * 1024


@dataclass
class RecordingStore(InMemoryServiceCallStore):
    queries: list[ListQuery] = field(default_factory=list)

    async def list(self, query: ListQuery) -> Page:
        self.queries.append(query)
        return await super().list(query)


@dataclass
class Keys:
    tenant_id: str

    async def find(self, key_id: str) -> StoredKey | None:
        return StoredKey(key_id, self.tenant_id, hash_secret(KEY.secret), revoked=False)


class Context:
    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {KEY.text}")]

    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


@pytest.mark.parametrize(
    ("view", "full"),
    [(svc.SERVICE_CALL_VIEW_UNSPECIFIED, False), (svc.BASIC, False), (svc.FULL, True)],
)
async def test_only_the_full_view_reads_whole_states(
    view: svc.ServiceCallView.ValueType, full: bool
) -> None:
    tenant = new_tenant()
    store = RecordingStore()
    call = spec(tenant)
    call = replace(call, request=replace(call.request, body=BODY))
    await store.transact(tenant, call.service_call_id, submit_step(call, T0))
    orchestrator = orchestrator_over(store, FakeClock())
    api = ServiceCallApi(orchestrator, Uuid7Gen(), PageTokens(b"s"), Authenticator(Keys(tenant)))

    page = await api.ListServiceCalls(
        svc.ListServiceCallsRequest(tenant_id=tenant, view=view),
        Context(),  # type: ignore[arg-type]
    )

    assert [q.full for q in store.queries] == [full]
    (listed,) = page.service_calls
    assert listed.request.body == (BODY if full else b"")
