"""The scheduler's typed configuration, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from mesh.config import CommonConfig, ConfigError, Env
from mesh.metrics import METRICS_OFF, MetricsConfig


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    common: CommonConfig
    batch_size: int
    claim_lease: timedelta
    max_sleep: timedelta
    window_span: timedelta
    window_capacity: int
    handoff_pull_rate: float
    handoff_pull_max: timedelta
    consumer_group: str
    metrics: MetricsConfig = METRICS_OFF
    # How often the pending-timers gauge is sampled: one count over the index of pending
    # timers, ~135 ms at 500k pending (docs/observability.md), hence not every scrape.
    metrics_sample_s: float = 15.0

    @classmethod
    def from_env(cls, env: Env) -> SchedulerConfig:
        config = cls(
            common=CommonConfig.from_env(env, "scheduler", 50052),
            batch_size=env.integer("FIRE_BATCH_SIZE", 500),
            claim_lease=env.seconds("CLAIM_LEASE_S", 10.0),
            # How often the firing loop re-reads the near-term window from Postgres even when
            # nothing woke it: the bound on noticing timers another replica armed or left.
            max_sleep=env.seconds("MAX_SLEEP_S", 1.0),
            window_span=env.seconds("WINDOW_SPAN_S", 300.0),
            # Bounded memory: the window never holds more, however many timers are pending.
            # Also what the crowded-hand-off rule can see ahead (scheduler/domain/window.py):
            # at least HANDOFF_PULL_RATE x HANDOFF_PULL_MAX_S.
            window_capacity=env.integer("WINDOW_CAPACITY", 16384),
            # Hand-offs per second the pipeline (orchestrator, Kafka) is counted on for when
            # many calls are due together, and how early that may fire one (at most the
            # orchestrator's HANDOFF_EARLY_MAX_S); 0 turns the rule off. docs/timing.md.
            handoff_pull_rate=env.number("HANDOFF_PULL_RATE", 1000.0),
            handoff_pull_max=env.seconds("HANDOFF_PULL_MAX_S", 10.0),
            consumer_group=env.text("SCHEDULER_GROUP", "scheduler"),
            metrics=MetricsConfig.from_env(env),
            metrics_sample_s=env.number("METRICS_SAMPLE_S", 15.0),
        )
        if config.handoff_pull_rate < 0:
            raise ConfigError("HANDOFF_PULL_RATE must not be negative (0 turns it off)")
        if config.handoff_pull_max < timedelta(0):
            raise ConfigError("HANDOFF_PULL_MAX_S must not be negative")
        if config.window_capacity < 1:
            raise ConfigError("WINDOW_CAPACITY must be positive")
        return config
