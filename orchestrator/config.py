"""The orchestrator's typed configuration, read once from the environment (mesh/config.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from mesh.config import CommonConfig, ConfigError, Env
from mesh.kafka import MAX_MESSAGE_BYTES
from mesh.metrics import METRICS_OFF, MetricsConfig
from mesh.secrets import SecretBox, fingerprint_key_from_env
from orchestrator.adapters.relay import INBOX_RETENTION
from orchestrator.domain.model import Timing
from orchestrator.domain.validation import Limits
from orchestrator.entrypoints.api_workers import default_base_port, worker_ports

# More processes than cores only add switching; this bounds a typo, not a machine.
MAX_API_WORKERS = 64


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    common: CommonConfig
    timing: Timing
    limits: Limits
    page_token_secret: bytes
    max_snippet_bytes: int
    consumer_group: str
    secrets: SecretBox
    # Keys the idempotency fingerprints (IDEMPOTENCY_KEY, else derived from MESH_SECRET_KEY).
    fingerprint_key: bytes
    api_key_cache_s: float
    # How often each replica sweeps for calls past their dispatch lease or attempt deadline
    # (orchestrator/entrypoints/watchdog.py), and how many it reads at a time.
    watchdog_interval_s: float
    watchdog_batch: int
    # How long past its hand-off time a Scheduled call waits for the scheduler's
    # DueTimeReached before the watchdog hands it off itself (a lost timer request or fact).
    handoff_backstop: timedelta
    # How long applied event ids are kept for deduplication (orchestrator/adapters/relay.py).
    inbox_retention: timedelta
    # Processes serving the public API: this one (on GRPC_PORT) and API_WORKERS - 1 children
    # on `api_worker_ports`. The background loops run in this process only, whatever the count.
    api_workers: int = 1
    api_worker_ports: tuple[int, ...] = ()
    # METRICS_PORT of this process; each API worker serves its own metrics on
    # `api_worker_metrics_ports` (the same rule as its gRPC port), so Prometheus scrapes each.
    metrics: MetricsConfig = METRICS_OFF
    api_worker_metrics_ports: tuple[int, ...] = ()
    # How often the gauges read from tables (outbox age, parked messages) are sampled.
    metrics_sample_s: float = 5.0
    # Schedules (orchestrator/entrypoints/schedule_loop.py): how often the materialiser looks
    # for due occurrences; how far ahead it makes their calls (more than the hand-off lead,
    # so each call exists before its hand-off and is sent on time by the timer path); how
    # late an occurrence is missed (its schedule's missed-occurrence policy then decides);
    # how many schedules one pass claims.
    schedule_poll_s: float = 0.25
    # Queues (#18): how often each replica's dispatcher looks for held calls, and how often
    # every process refreshes its view of the queues (PauseQueue answers after one refresh).
    queue_dispatch_s: float = 0.1
    queue_refresh_s: float = 0.2
    schedule_lookahead: timedelta = timedelta(seconds=3)
    schedule_missed_after: timedelta = timedelta(seconds=5)
    schedule_pass_limit: int = 100
    # The call-event consumer (timer and execution facts): handlers at once, of which one
    # tenant may hold at most `consumer_max_per_tenant`; past that a tenant's facts wait in
    # its own queue, up to `consumer_max_waiting` facts and `consumer_max_bytes` bytes in all
    # (docs/operations.md, "Fair sharing").
    consumer_max_in_flight: int = 256
    consumer_max_per_tenant: int = 128
    consumer_max_waiting: int = 131072
    consumer_max_bytes: int = 128 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Env) -> OrchestratorConfig:
        watchdog_interval_s = env.number("WATCHDOG_INTERVAL_S", 1.0)
        if watchdog_interval_s <= 0:
            raise ConfigError(f"WATCHDOG_INTERVAL_S must be positive, got {watchdog_interval_s}")
        watchdog_batch = env.integer("WATCHDOG_BATCH", 256)
        if watchdog_batch < 1:
            raise ConfigError(f"WATCHDOG_BATCH must be at least 1, got {watchdog_batch}")
        handoff_backstop = env.seconds("HANDOFF_BACKSTOP_S", 30.0)
        if handoff_backstop <= timedelta(0):
            raise ConfigError("HANDOFF_BACKSTOP_S must be positive")
        handoff_early_max = env.seconds("HANDOFF_EARLY_MAX_S", 15.0)
        if handoff_early_max < timedelta(0):
            raise ConfigError("HANDOFF_EARLY_MAX_S must not be negative")
        common = CommonConfig.from_env(env, "orchestrator", 50051)
        consumer_max_in_flight = env.integer("CONSUMER_MAX_IN_FLIGHT", 256)
        consumer_max_per_tenant = env.integer(
            "CONSUMER_MAX_PER_TENANT", max(1, consumer_max_in_flight // 2)
        )
        # Room for a crowd of 100,000 facts fired before another tenant's: past the read-ahead
        # that tenant's fact waits in Kafka behind the excess (docs/timing.md, "A crowd of
        # 100,000"). A fact is a few hundred bytes: 100,000 of them peaked the process at
        # ~200 MB.
        consumer_max_waiting = env.integer("CONSUMER_MAX_WAITING", 131072)
        consumer_max_bytes = env.integer("CONSUMER_MAX_BYTES", 128 * 1024 * 1024)
        if min(consumer_max_in_flight, consumer_max_per_tenant, consumer_max_waiting) < 1:
            raise ConfigError(
                "CONSUMER_MAX_IN_FLIGHT, CONSUMER_MAX_PER_TENANT and CONSUMER_MAX_WAITING must "
                "be at least 1"
            )
        if consumer_max_bytes < 1:
            raise ConfigError("CONSUMER_MAX_BYTES must be positive")
        api_workers = env.integer("API_WORKERS", 1)
        if not 1 <= api_workers <= MAX_API_WORKERS:
            raise ConfigError(f"API_WORKERS must be 1 to {MAX_API_WORKERS}, got {api_workers}")
        base_port = env.integer("API_WORKER_BASE_PORT", default_base_port(common.grpc_port))
        api_worker_ports = worker_ports(common.grpc_port, api_workers, base_port)
        if common.grpc_port in api_worker_ports or not all(
            0 < port < 65536 for port in api_worker_ports
        ):
            raise ConfigError(
                f"API worker ports {api_worker_ports} (from API_WORKER_BASE_PORT={base_port}) "
                f"must be valid ports other than GRPC_PORT={common.grpc_port}"
            )
        metrics = MetricsConfig.from_env(env)
        api_worker_metrics_ports = (
            worker_ports(metrics.port, api_workers) if metrics.enabled else ()
        )
        if set(api_worker_metrics_ports) & {common.grpc_port, metrics.port, *api_worker_ports}:
            raise ConfigError(
                f"API worker metrics ports {api_worker_metrics_ports} (METRICS_PORT + 100...) "
                "clash with a gRPC or metrics port"
            )
        schedule_poll_s = env.number("SCHEDULE_POLL_S", 0.25)
        if schedule_poll_s <= 0:
            raise ConfigError(f"SCHEDULE_POLL_S must be positive, got {schedule_poll_s}")
        handoff_lead = env.seconds("HANDOFF_LEAD_S", 2.0)
        queue_dispatch_s = env.number("QUEUE_DISPATCH_S", 0.1)
        queue_refresh_s = env.number("QUEUE_REFRESH_S", 0.2)
        if queue_dispatch_s <= 0 or queue_refresh_s <= 0:
            raise ConfigError("QUEUE_DISPATCH_S and QUEUE_REFRESH_S must be positive")
        schedule_lookahead = env.seconds("SCHEDULE_LOOKAHEAD_S", 3.0)
        if schedule_lookahead <= handoff_lead:
            raise ConfigError(
                f"SCHEDULE_LOOKAHEAD_S ({schedule_lookahead.total_seconds()}) must exceed "
                f"HANDOFF_LEAD_S ({handoff_lead.total_seconds()}): an occurrence's call must "
                "exist before its hand-off time"
            )
        schedule_missed_after = env.seconds("SCHEDULE_MISSED_AFTER_S", 5.0)
        if schedule_missed_after <= timedelta(0):
            raise ConfigError("SCHEDULE_MISSED_AFTER_S must be positive")
        schedule_pass_limit = env.integer("SCHEDULE_PASS_LIMIT", 100)
        if schedule_pass_limit < 1:
            raise ConfigError(f"SCHEDULE_PASS_LIMIT must be at least 1, got {schedule_pass_limit}")
        return cls(
            common=common,
            timing=Timing(
                handoff_lead=handoff_lead,
                dispatch_lease=env.seconds("DISPATCH_LEASE_S", 30.0),
                attempt_grace=env.seconds("ATTEMPT_GRACE_S", 30.0),
                # At least the scheduler's HANDOFF_PULL_MAX_S: a hand-off pulled further is
                # only re-armed for its fire time, never lost (decide.py, _fire_timer).
                handoff_early_max=handoff_early_max,
            ),
            limits=Limits(
                max_body_bytes=env.integer("MAX_BODY_BYTES", 1024 * 1024),
                max_headers=env.integer("MAX_HEADERS", 100),
                max_header_bytes=env.integer("MAX_HEADER_BYTES", 64 * 1024),
                # The producer's message.max.bytes as well: keep it at or below the brokers'
                # message.max.bytes minus their margin (docs/operations.md, size limits).
                max_message_bytes=env.integer("MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES),
            ),
            inbox_retention=env.seconds("INBOX_RETENTION_S", INBOX_RETENTION.total_seconds()),
            # Tokens only need to survive between two list calls; replicas must share it.
            page_token_secret=env.text("PAGE_TOKEN_SECRET", "dev-only-page-token-secret").encode(),
            max_snippet_bytes=env.integer("MAX_SNIPPET_BYTES", 1024),
            consumer_group=env.text("ORCHESTRATOR_GROUP", "orchestrator"),
            secrets=SecretBox.from_env(env.values),
            fingerprint_key=fingerprint_key_from_env(env.values),
            api_key_cache_s=env.number("API_KEY_CACHE_S", 30.0),
            watchdog_interval_s=watchdog_interval_s,
            watchdog_batch=watchdog_batch,
            handoff_backstop=handoff_backstop,
            api_workers=api_workers,
            api_worker_ports=api_worker_ports,
            metrics=metrics,
            api_worker_metrics_ports=api_worker_metrics_ports,
            metrics_sample_s=env.number("METRICS_SAMPLE_S", 5.0),
            schedule_poll_s=schedule_poll_s,
            queue_dispatch_s=queue_dispatch_s,
            queue_refresh_s=queue_refresh_s,
            schedule_lookahead=schedule_lookahead,
            schedule_missed_after=schedule_missed_after,
            schedule_pass_limit=schedule_pass_limit,
            consumer_max_in_flight=consumer_max_in_flight,
            consumer_max_per_tenant=consumer_max_per_tenant,
            consumer_max_waiting=consumer_max_waiting,
            consumer_max_bytes=consumer_max_bytes,
        )
