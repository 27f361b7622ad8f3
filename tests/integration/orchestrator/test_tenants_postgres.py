"""The admin CLI's tenant and key commands and the API's key lookup, on Postgres."""

from __future__ import annotations

import pytest

from mesh.db import make_engine
from orchestrator.adapters.parking import ParkingAdmin
from orchestrator.adapters.tenants import PostgresKeyLookup, TenantAdmin
from orchestrator.domain.api_keys import hash_secret
from orchestrator.entrypoints import admin


async def test_tenants_and_keys_round_trip(fresh_database: str) -> None:
    tenants = TenantAdmin(fresh_database)
    assert tenants.create_tenant("acme")
    assert not tenants.create_tenant("acme")
    first, second = tenants.create_key("acme"), tenants.create_key("acme")
    listed = tenants.list_keys("acme")
    assert [k.key_id for k in listed] == [first.key_id, second.key_id]
    assert all(k.tenant_id == "acme" and k.revoked_at is None for k in listed)
    assert tenants.list_keys("nobody") == []

    engine = make_engine(fresh_database, pool_size=1)
    lookup = PostgresKeyLookup(engine)
    try:
        found = await lookup.find(first.key_id)
        assert found is not None
        assert (found.tenant_id, found.secret_hash, found.revoked) == (
            "acme",
            hash_secret(first.secret),
            False,
        )
        assert tenants.revoke_key(first.key_id)
        assert not tenants.revoke_key(first.key_id)
        revoked = await lookup.find(first.key_id)
        assert revoked is not None and revoked.revoked
        assert await lookup.find("no-such-key") is None
    finally:
        await engine.dispose()
    assert [k.revoked_at is not None for k in tenants.list_keys("acme")] == [True, False]


def test_the_cli_lists_keys(fresh_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    tenants, parked = TenantAdmin(fresh_database), ParkingAdmin(fresh_database)
    assert admin.run(tenants, parked, ["create-tenant", "acme"]) == 0
    key_id = tenants.create_key("acme").key_id
    capsys.readouterr()
    assert admin.run(tenants, parked, ["list-keys", "acme"]) == 0
    assert key_id in capsys.readouterr().out
