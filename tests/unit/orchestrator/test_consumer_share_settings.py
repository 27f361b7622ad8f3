"""The call-event consumer's fair-sharing settings: a tenant's share defaults to half the
handlers (following CONSUMER_MAX_IN_FLIGHT), and bad values are refused at start-up."""

from __future__ import annotations

import base64

import pytest

from mesh.config import ConfigError, Env
from orchestrator.config import OrchestratorConfig

KEY = {"MESH_SECRET_KEY": base64.b64encode(bytes(32)).decode()}


def test_a_tenant_s_share_is_half_the_handlers_unless_set() -> None:
    config = OrchestratorConfig.from_env(Env(KEY))
    assert (config.consumer_max_in_flight, config.consumer_max_per_tenant) == (256, 128)
    assert config.consumer_max_waiting == 131072
    assert config.consumer_max_bytes == 128 * 1024 * 1024
    smaller = OrchestratorConfig.from_env(Env(KEY | {"CONSUMER_MAX_IN_FLIGHT": "10"}))
    assert smaller.consumer_max_per_tenant == 5
    one = OrchestratorConfig.from_env(Env(KEY | {"CONSUMER_MAX_IN_FLIGHT": "1"}))
    assert one.consumer_max_per_tenant == 1
    chosen = OrchestratorConfig.from_env(Env(KEY | {"CONSUMER_MAX_PER_TENANT": "7"}))
    assert chosen.consumer_max_per_tenant == 7


@pytest.mark.parametrize(
    "env",
    [
        {"CONSUMER_MAX_IN_FLIGHT": "0"},
        {"CONSUMER_MAX_PER_TENANT": "0"},
        {"CONSUMER_MAX_WAITING": "0"},
        {"CONSUMER_MAX_BYTES": "0"},
    ],
)
def test_bad_settings_fail_at_start_up(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        OrchestratorConfig.from_env(Env(KEY | env))
