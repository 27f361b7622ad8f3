"""The executor's typed configuration, read from the environment."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from executor.domain.egress import Network, parse_allowlist
from mesh.config import CommonConfig, ConfigError, Env
from mesh.secrets import SecretBox

DEFAULT_GRPC_PORT = 50053


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    common: CommonConfig
    executor_id: str
    consumer_group: str
    max_in_flight: int
    max_response_bytes: int
    default_snippet_bytes: int
    egress_allowlist: tuple[Network, ...]
    drain_timeout_s: float
    # Opens the secret headers the orchestrator sealed (MESH_SECRET_KEY[_OLD]); required, since
    # without it every call with a secret header would fail.
    secrets: SecretBox

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
        config = cls(
            common=CommonConfig.from_env(env, "executor", DEFAULT_GRPC_PORT),
            executor_id=env.text("EXECUTOR_ID", f"{socket.gethostname()}-{os.getpid()}"),
            consumer_group=env.text("EXECUTOR_GROUP", "executor"),
            max_in_flight=env.integer("MAX_IN_FLIGHT", 512),
            max_response_bytes=env.integer("MAX_RESPONSE_BYTES", 1024 * 1024),
            default_snippet_bytes=env.integer("MAX_SNIPPET_BYTES", 1024),
            egress_allowlist=allowlist,
            drain_timeout_s=env.number("DRAIN_TIMEOUT_S", 20.0),
            secrets=secrets,
        )
        for name, value in (
            ("MAX_IN_FLIGHT", config.max_in_flight),
            ("MAX_RESPONSE_BYTES", config.max_response_bytes),
            ("MAX_SNIPPET_BYTES", config.default_snippet_bytes),
        ):
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if config.drain_timeout_s < 0:
            raise ConfigError("DRAIN_TIMEOUT_S must not be negative")
        return config
