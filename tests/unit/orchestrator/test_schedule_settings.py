"""The materialiser's settings: defaults that make each occurrence's call before its hand-off,
bad values refused at start-up, and its counts as Prometheus counters."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from mesh.config import ConfigError, Env
from orchestrator.adapters.metrics import OccurrenceCounts
from orchestrator.config import OrchestratorConfig

KEY = {"MESH_SECRET_KEY": base64.b64encode(bytes(32)).decode()}


def test_the_defaults_make_calls_ahead_of_their_hand_off() -> None:
    config = OrchestratorConfig.from_env(Env(KEY))
    assert config.schedule_poll_s == 0.25
    assert config.schedule_lookahead == timedelta(seconds=3)
    assert config.schedule_missed_after == timedelta(seconds=5)
    assert config.schedule_pass_limit == 100
    # The lookahead less one poll still exceeds the lead: a call is made before its hand-off.
    lead = config.timing.handoff_lead
    assert config.schedule_lookahead - timedelta(seconds=config.schedule_poll_s) > lead


@pytest.mark.parametrize(
    "env",
    [
        {"SCHEDULE_LOOKAHEAD_S": "2"},  # not more than the 2 s lead
        {"SCHEDULE_LOOKAHEAD_S": "5", "HANDOFF_LEAD_S": "6"},
        {"SCHEDULE_POLL_S": "0"},
        {"SCHEDULE_MISSED_AFTER_S": "0"},
        {"SCHEDULE_PASS_LIMIT": "0"},
    ],
)
def test_bad_settings_fail_at_start_up(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        OrchestratorConfig.from_env(Env(KEY | env))


def test_occurrences_are_counted_by_outcome() -> None:
    registry = CollectorRegistry()
    counts = OccurrenceCounts(registry)
    counts.observe_occurrences(made=3, missed=2, skipped=0)
    counts.observe_occurrences(made=1, missed=0, skipped=1)

    def value(outcome: str) -> float:
        sample = registry.get_sample_value(
            "servicecall_schedule_occurrences_total", {"outcome": outcome}
        )
        return sample or 0.0

    assert (value("made"), value("missed"), value("skipped")) == (4, 2, 1)
