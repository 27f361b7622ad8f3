"""The executor's typed configuration, read from the environment."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from executor.adapters.h1_client import MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADERS
from executor.adapters.resolver import DNS_LOOKUPS_PER_TENANT, DNS_THREADS, DNS_TIMEOUT_S
from executor.adapters.signing_keys import load_signing_keys
from executor.domain.egress import Network, parse_allowlist
from executor.service_layer.registry import FINISHED_BYTES, FINISHED_REMEMBERED
from mesh.config import CommonConfig, ConfigError, Env
from mesh.metrics import METRICS_OFF, MetricsConfig
from mesh.secrets import SecretBox

DEFAULT_GRPC_PORT = 50053


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    common: CommonConfig
    executor_id: str
    consumer_group: str
    # Requests in flight at once: overall (also the connection pool's size), per tenant and
    # per target host (executor/service_layer/slots.py).
    max_in_flight: int
    max_in_flight_per_tenant: int
    max_in_flight_per_host: int
    # Execution requests held in memory (waiting for not-before or for a slot, or in flight):
    # past this the Kafka consumer stops fetching.
    max_held: int
    # The same cap in message bytes: a count alone bounds memory only by the count times the
    # largest request body the API accepts.
    max_held_bytes: int
    # Each tenant's share of those two caps (fair sharing, issue 12): a tenant at its share
    # waits in its own queue while the others' requests are still taken (mesh/kafka.py).
    max_held_per_tenant: int
    max_held_bytes_per_tenant: int
    max_response_bytes: int
    default_snippet_bytes: int
    egress_allowlist: tuple[Network, ...]
    drain_timeout_s: float
    kafka_linger_ms: float
    # Opens the secret headers the orchestrator sealed (MESH_SECRET_KEY[_OLD]); required, since
    # without it every call with a secret header would fail.
    secrets: SecretBox
    # Tenant → webhook signing secrets (executor/adapters/signing_keys.py); None: nobody signs.
    signing_keys_file: Path | None
    # Scheduling priority (nice, -20..19) the executor asks for at start. Its sends are due to
    # the millisecond, its CPU per call is small, and on a host it shares with busier processes
    # (Kafka, Postgres, the orchestrator) waiting for a CPU is what made sends late
    # (docs/timing.md). Below 0 needs CAP_SYS_NICE; without it the executor warns and runs at 0.
    nice: int = 0
    # 1..99: run under the real-time policy SCHED_FIFO at that priority (0: off, the default).
    # A FIFO thread that wakes takes a CPU from any ordinary one at once, where a nice value
    # only shifts CPU shares: on a 2-core host at 75% busy, -10 still left the executor's own
    # p99 at 3-16 ms, SCHED_FIFO at 1 brought it under 1 ms (docs/timing.md). Needs root or
    # CAP_SYS_NICE. The kernel's real-time throttling (sched_rt_runtime_us, 95% by default)
    # keeps a busy executor from taking all of a CPU, and its one event loop uses one CPU.
    rt_priority: int = 0
    # Allocations between young-generation collections (executor/main.py, tune_gc).
    gc_gen0_threshold: int = 50_000
    # ExecutionStarted only for an attempt still in flight this long after its request went out
    # (None: before every request). A quicker attempt's result carries its start time, and the
    # call goes from Dispatched straight to its result: one Kafka message and one orchestrator
    # transaction fewer per call. Kept well under the dispatch lease (30 s), which is what
    # covers an attempt lost before its Started.
    started_after: timedelta | None = timedelta(seconds=1)
    # How long a finished attempt's report may wait while other attempts are about to send
    # (Attempts._reports_may_go); None: reports never wait.
    report_defer: timedelta | None = timedelta(seconds=2)
    # Results of finished attempts kept to answer a redelivered request without sending it
    # again (executor/service_layer/registry.py, FinishedAttempts): at most this many, and
    # this many bytes.
    finished_remembered: int = FINISHED_REMEMBERED
    finished_bytes: int = FINISHED_BYTES
    # A response with more headers, or more header bytes, fails its attempt (connection_error,
    # retryable, like a malformed response) and its connection is dropped.
    max_response_headers: int = MAX_RESPONSE_HEADERS
    max_response_header_bytes: int = MAX_RESPONSE_HEADER_BYTES
    # Name lookups (executor/adapters/resolver.py): threads of their own, at most this many
    # per tenant at once (counted until a timed-out lookup's thread is free), each given up
    # after the timeout.
    dns_threads: int = DNS_THREADS
    dns_lookups_per_tenant: int = DNS_LOOKUPS_PER_TENANT
    dns_timeout_s: float = DNS_TIMEOUT_S
    # Where /metrics is served (METRICS_PORT; 0: not served).
    metrics: MetricsConfig = METRICS_OFF

    @classmethod
    def from_env(cls, env: Env) -> ExecutorConfig:
        cidrs = env.items("EGRESS_ALLOW_CIDRS")
        try:
            allowlist = parse_allowlist(cidrs)
        except ValueError as e:
            raise ConfigError(f"EGRESS_ALLOW_CIDRS: {e}") from e
        try:
            secrets = SecretBox.from_env(env.values)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        max_in_flight = env.integer("MAX_IN_FLIGHT", 512)
        # Room for a crowd of calls due together, all handed off before their due time
        # (scheduler/domain/window.py): held calls cost memory only while held.
        max_held = env.integer("MAX_HELD", max(max_in_flight * 4, 32768))
        max_held_bytes = env.integer("MAX_HELD_BYTES", 256 * 1024 * 1024)
        signing_keys_file = _signing_keys_file(env)
        if signing_keys_file is not None and signing_keys_file.exists():
            try:
                load_signing_keys(signing_keys_file)  # fail at start-up, not at the first call
            except (OSError, ValueError) as e:
                raise ConfigError(f"WEBHOOK_SIGNING_KEYS_FILE: {e}") from e
        config = cls(
            common=CommonConfig.from_env(env, "executor", DEFAULT_GRPC_PORT),
            executor_id=env.text("EXECUTOR_ID", f"{socket.gethostname()}-{os.getpid()}"),
            consumer_group=env.text("EXECUTOR_GROUP", "executor"),
            max_in_flight=max_in_flight,
            max_in_flight_per_tenant=env.integer("MAX_IN_FLIGHT_PER_TENANT", max_in_flight // 2),
            max_in_flight_per_host=env.integer("MAX_IN_FLIGHT_PER_HOST", max_in_flight // 4),
            max_held=max_held,
            max_held_bytes=max_held_bytes,
            # Half the count: one tenant's 10k calls due at one instant are all held ahead of
            # time (the burst goal), while another tenant still finds half the room; a quarter
            # of the bytes: four tenants of 1 MiB bodies before anyone waits on memory.
            max_held_per_tenant=env.integer("MAX_HELD_PER_TENANT", max_held // 2),
            max_held_bytes_per_tenant=env.integer("MAX_HELD_BYTES_PER_TENANT", max_held_bytes // 4),
            max_response_bytes=env.integer("MAX_RESPONSE_BYTES", 1024 * 1024),
            default_snippet_bytes=env.integer("MAX_SNIPPET_BYTES", 1024),
            egress_allowlist=allowlist,
            drain_timeout_s=env.number("DRAIN_TIMEOUT_S", 20.0),
            kafka_linger_ms=env.number("KAFKA_LINGER_MS", 5.0),
            secrets=secrets,
            signing_keys_file=signing_keys_file,
            nice=env.integer("EXECUTOR_NICE", 0),
            rt_priority=env.integer("EXECUTOR_RT_PRIORITY", 0),
            gc_gen0_threshold=env.integer("EXECUTOR_GC_GEN0", 50_000),
            started_after=_started_after(env.number("REPORT_STARTED_AFTER_S", 1.0)),
            report_defer=_report_defer(env.number("REPORT_DEFER_MAX_S", 2.0)),
            finished_remembered=env.integer("FINISHED_ATTEMPTS_REMEMBERED", FINISHED_REMEMBERED),
            finished_bytes=env.integer("FINISHED_ATTEMPTS_BYTES", FINISHED_BYTES),
            max_response_headers=env.integer("MAX_RESPONSE_HEADERS", MAX_RESPONSE_HEADERS),
            max_response_header_bytes=env.integer(
                "MAX_RESPONSE_HEADER_BYTES", MAX_RESPONSE_HEADER_BYTES
            ),
            dns_threads=env.integer("DNS_THREADS", DNS_THREADS),
            dns_lookups_per_tenant=env.integer("DNS_LOOKUPS_PER_TENANT", DNS_LOOKUPS_PER_TENANT),
            dns_timeout_s=env.number("DNS_TIMEOUT_S", DNS_TIMEOUT_S),
            metrics=MetricsConfig.from_env(env),
        )
        for name, value in (
            ("MAX_IN_FLIGHT", config.max_in_flight),
            ("MAX_IN_FLIGHT_PER_TENANT", config.max_in_flight_per_tenant),
            ("MAX_IN_FLIGHT_PER_HOST", config.max_in_flight_per_host),
            ("MAX_RESPONSE_BYTES", config.max_response_bytes),
            ("MAX_SNIPPET_BYTES", config.default_snippet_bytes),
            ("EXECUTOR_GC_GEN0", config.gc_gen0_threshold),
            ("MAX_HELD_BYTES", config.max_held_bytes),
            ("MAX_HELD_PER_TENANT", config.max_held_per_tenant),
            ("MAX_HELD_BYTES_PER_TENANT", config.max_held_bytes_per_tenant),
            ("FINISHED_ATTEMPTS_REMEMBERED", config.finished_remembered),
            ("FINISHED_ATTEMPTS_BYTES", config.finished_bytes),
            ("MAX_RESPONSE_HEADERS", config.max_response_headers),
            ("MAX_RESPONSE_HEADER_BYTES", config.max_response_header_bytes),
            ("DNS_THREADS", config.dns_threads),
            ("DNS_LOOKUPS_PER_TENANT", config.dns_lookups_per_tenant),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if config.max_held < config.max_in_flight:
            raise ConfigError("MAX_HELD must be at least MAX_IN_FLIGHT")
        if config.dns_lookups_per_tenant > config.dns_threads:
            raise ConfigError("DNS_LOOKUPS_PER_TENANT must be at most DNS_THREADS")
        if config.dns_timeout_s <= 0:
            raise ConfigError(f"DNS_TIMEOUT_S must be positive, got {config.dns_timeout_s}")
        if config.drain_timeout_s < 0:
            raise ConfigError("DRAIN_TIMEOUT_S must not be negative")
        if config.started_after is not None and config.started_after > timedelta(seconds=10):
            raise ConfigError("REPORT_STARTED_AFTER_S must be at most 10 (well within the lease)")
        if not -20 <= config.nice <= 19:
            raise ConfigError(f"EXECUTOR_NICE must be between -20 and 19, got {config.nice}")
        if not 0 <= config.rt_priority <= 99:
            raise ConfigError(
                f"EXECUTOR_RT_PRIORITY must be between 0 and 99, got {config.rt_priority}"
            )
        if not 0 <= config.kafka_linger_ms <= 1000:
            raise ConfigError("KAFKA_LINGER_MS must be between 0 and 1000")
        return config


def _report_defer(seconds: float) -> timedelta | None:
    if not 0 <= seconds <= 10:
        raise ConfigError(f"REPORT_DEFER_MAX_S must be between 0 and 10, got {seconds}")
    return timedelta(seconds=seconds) if seconds > 0 else None


def _started_after(seconds: float) -> timedelta | None:
    if seconds < 0:
        raise ConfigError(f"REPORT_STARTED_AFTER_S must not be negative, got {seconds}")
    return None if seconds == 0 else timedelta(seconds=seconds)


def _signing_keys_file(env: Env) -> Path | None:
    """WEBHOOK_SIGNING_KEYS_FILE, else `webhook-signing-keys.json` in the mesh's run directory
    (meshctl passes MESH_RUN_DIR), so a local mesh signs as soon as that file is written."""
    explicit = env.values.get("WEBHOOK_SIGNING_KEYS_FILE")
    if explicit:
        return Path(explicit)
    run_dir = env.values.get("MESH_RUN_DIR")
    return Path(run_dir) / "webhook-signing-keys.json" if run_dir else None
