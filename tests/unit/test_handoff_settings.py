"""The crowded-hand-off settings of the scheduler and the orchestrator agree by default, and
bad values fail at start-up."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from mesh.config import ConfigError, Env
from orchestrator.config import OrchestratorConfig
from scheduler.config import SchedulerConfig

KEY = {"MESH_SECRET_KEY": base64.b64encode(bytes(32)).decode()}


def test_defaults_let_the_orchestrator_accept_every_hand_off_the_scheduler_pulls() -> None:
    scheduler = SchedulerConfig.from_env(Env({}))
    orchestrator = OrchestratorConfig.from_env(Env(KEY))
    assert scheduler.handoff_pull_rate == 1000.0
    assert scheduler.handoff_pull_max == timedelta(seconds=10)
    assert orchestrator.timing.handoff_early_max == timedelta(seconds=15)
    assert orchestrator.timing.handoff_early_max >= scheduler.handoff_pull_max
    # The window sees a whole crowd the rule may pull: rate x maximum rows.
    assert scheduler.window_capacity >= scheduler.handoff_pull_rate * 10


def test_the_rule_can_be_turned_off() -> None:
    scheduler = SchedulerConfig.from_env(Env({"HANDOFF_PULL_RATE": "0"}))
    assert scheduler.handoff_pull_rate == 0


@pytest.mark.parametrize(
    "env",
    [{"HANDOFF_PULL_RATE": "-1"}, {"HANDOFF_PULL_MAX_S": "-1"}, {"WINDOW_CAPACITY": "0"}],
)
def test_bad_scheduler_values_fail_at_start_up(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        SchedulerConfig.from_env(Env(env))


def test_a_negative_early_allowance_fails_at_start_up() -> None:
    with pytest.raises(ConfigError, match="HANDOFF_EARLY_MAX_S"):
        OrchestratorConfig.from_env(Env(KEY | {"HANDOFF_EARLY_MAX_S": "-1"}))
